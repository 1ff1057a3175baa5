"""Leased work queues shared by every task kind (albums, downloads, URLs).

A queued aggregate's projection carries `queue`, `state` ("ready", "leased",
…), `queue_group` (0 = never tried, 1 = retry) and `available_at`. Work is
handed out never-tried first, then retries that are due.

The point of decision is the projection: a lease writes it with the `_rev`
it was read with, so of two callers that picked the same item exactly one
wins; the other's write conflicts, which means "taken, try the next one",
never an error. One event then records the whole lease (app/store/events.py).

Where candidates come from. Keeping a view index current costs work for every
projection written; on the bundled server that is ~0.6 ms a document, more
than the lease's own write (~0.25 ms) and read. So a process reads the
`queues/ready` view once per queue (fresh for its first page, then page by
page from a cursor with `stale=ok`, which costs no index work), and from then
on learns what changed from the read model's `_changes` feed (~0.07 ms a
document), which it reads at the start of every lease call. The union is
complete: the feed is followed from a sequence taken before the first view
read, so every change the index may not show arrives through the feed. Each
process keeps, per queue, the ready items it knows of (ids and order; the
document too for the first few thousand), takes the best due ones, reads the
missing documents, and writes. "Nothing to lease" is answered only after the
feed has been read up to date and the view has been read to its end.

Under load every caller picking the head of the same queue would collide.
Calls of one process share one set and never get the same item; processes
prefer their own slot of ids (`lease_slot` of `lease_slots`) before the
others', so they work on distinct items until a queue runs low. Sites do the
same one level up: with several sites each leases from its own share of
every queue (`site_share` of `site_shares`, by a hash of the id) and takes
from the others' shares only when its own has nothing due, so two sites
that cannot see each other's leases rarely hand out the same item.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.queues.candidates import PhaseTimer, Place, ReadyQueue
from app.queues.holders import LEASED, READY, expired_holders
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Doc, is_settled, unbacked
from app.timeutil import iso

log = logging.getLogger(__name__)

MAX_ROUNDS = 50  # lease rounds per call: a backstop, rounds normally end on their own
FIRST_PAGE_ROWS = 2000  # the fresh read that starts a queue's set, with documents
PAGE_ROWS = 2000  # view rows read at a time (stale=ok, ids only) as the set is consumed
LOW_WATER = 4000  # fewer known ready items than this: read the next page in the background
FEED_ROWS = 2000


def is_leasable(state: Doc | None, queue: str, now: datetime) -> bool:
    return (
        state is not None
        and state.get("state") == READY
        and state.get("queue") == queue
        and state.get("available_at", "") <= iso(now)
    )


def is_ready_in(doc: Doc | None, queue: str) -> bool:
    """Ready in this queue, whenever it is due."""
    return doc is not None and doc.get("state") == READY and doc.get("queue") == queue


def lease_decision(
    queue: str, holder: str, expires_at: datetime, now: datetime
) -> Callable[[Doc | None], tuple[str, dict[str, Any]] | None]:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not is_leasable(state, queue, now):
            return None
        return "leased", {"holder": holder, "expires_at": iso(expires_at)}

    return decide


class QueueLeaser:
    """Hands out ready work of one read model to concurrent lease calls, fairly."""

    def __init__(
        self,
        db: Database,
        *,
        lease_slot: int = 0,
        lease_slots: int = 1,
        site_share: int = 0,
        site_shares: int = 1,
    ) -> None:
        self.db = db
        self.slot, self.slots = lease_slot, max(1, lease_slots)
        self.share, self.shares = site_share, max(1, site_shares)
        self._lock = threading.Lock()  # guards the sets and the feed position
        self._feed_lock = threading.Lock()  # one reader of the feed at a time
        self._queues: dict[str, ReadyQueue] = {}
        self._since: Any = None

    def lease(
        self, queue: str, holder: str, rows: int, now: datetime, duration: timedelta, actor: str
    ) -> list[Doc]:
        """Lease up to `rows` ready items of `queue` to `holder`; return their projections."""
        timer = PhaseTimer()
        with timer("feed"):
            self._follow_feed()
        with timer("load"):
            ready = self._ready_queue(queue)
        leased: list[Doc] = []
        caught_up = True
        for _ in range(MAX_ROUNDS):
            if len(leased) >= rows:
                break
            with timer("take"):
                batch = self._take(ready, queue, rows - len(leased), now)
            if batch:
                try:
                    with timer("record"):
                        recorded = self._record(batch, queue, holder, now, duration, actor)
                    leased.extend(recorded)
                except Exception:
                    if not leased:
                        raise
                    # earlier rounds are recorded: the caller holds them, so say so
                    log.warning("a lease round failed; answering the %d leased", len(leased))
                    break
                finally:
                    with self._lock:
                        ready.in_flight.difference_update(doc["_id"] for doc in batch)
                        ready.gone.update(doc["_id"] for doc in leased)
                if leased and len(recorded) < len(batch) // 2:
                    break  # another process chases the same items: answer what we have
                caught_up = False
            elif not caught_up:
                with timer("feed"):
                    self._follow_feed()  # others may have returned work meanwhile
                caught_up = True
            else:
                break
        timer.report_if_slow(f"lease of {len(leased)} from {queue}")
        return leased

    # ---------------------------------------------------------------- candidates

    def _ready_queue(self, queue: str) -> ReadyQueue:
        with self._lock:
            ready = self._queues.get(queue)
        if ready is not None:
            return ready
        with self._feed_lock:  # no change is applied between the feed position and this read
            with self._lock:
                if queue in self._queues:
                    return self._queues[queue]
            ready = ReadyQueue()
            self._read_page(ready, queue, fresh=True)  # raises: nothing is published
            with self._lock:
                self._queues[queue] = ready
        if not ready.exhausted:
            self._prefetch(ready, queue)  # the next page, before the calls waiting now need it
        return ready

    def _read_page(self, ready: ReadyQueue, queue: str, *, fresh: bool) -> None:
        """Read the next page of the ready view into the set (the first one fresh).

        include_docs gives each row's current document (not the one indexed),
        which costs less than reading the documents later by id.
        """
        limit = FIRST_PAGE_ROWS if fresh else PAGE_ROWS
        if fresh:
            ready.index_rev = self._index_rev()
        rows = self._view_page(ready.cursor, queue, limit, fresh=fresh)
        if not fresh and len(rows) < limit and self._index_rev() != ready.index_rev:
            # The index was rebuilt since the first (fresh) read (its design
            # document changed): a stale page of a half-built index proves
            # nothing, so this one is read fresh. Otherwise the index is at
            # least as new as that first read and the feed has the rest, and a
            # short page is the end; a fresh read here would index every
            # album leased since, tens of seconds on the bundled server.
            ready.index_rev = self._index_rev()
            rows = self._view_page(ready.cursor, queue, limit, fresh=True)
        with self._lock:
            for row in rows:
                _, group, available_at, doc_id = row["key"]
                if doc_id in ready.entries or doc_id in ready.gone or doc_id in ready.in_flight:
                    continue  # the feed knows better than the index
                if "doc" in row and not is_ready_in(row["doc"], queue):
                    continue  # leased since it was indexed: the current document says so
                ready.upsert(self._place(group, doc_id), available_at, doc_id, row.get("doc"))
            ready.cursor = rows[-1]["key"] if rows else ready.cursor
            ready.exhausted = len(rows) < limit
            ready.pages += 1

    def _index_rev(self) -> str:
        return str(self.db.get("_design/queues")["_rev"])

    def _view_page(
        self, cursor: list[Any] | None, queue: str, limit: int, *, fresh: bool
    ) -> list[Doc]:
        """Up to `limit` rows after `cursor`. The cursor row itself may have left the
        index (leased meanwhile), so it is asked for and dropped, never skipped blindly."""
        params: dict[str, Any] = {"startkey": cursor or [queue], "endkey": [queue, {}]}
        params["limit"] = limit + (cursor is not None)
        if not fresh:
            params["stale"] = "ok"  # the feed covers what the index does not show yet
        # Only the first page brings documents (the first calls need them at once);
        # later ones are read by id when taken, fewer than the rows walked.
        rows = self.db.view("queues", "ready", reduce=False, include_docs=fresh, **params)
        return [row for row in rows if row["key"] != cursor][:limit]

    def _follow_feed(self) -> None:
        """Apply the read model's changes since the last call to every loaded queue."""
        with self._feed_lock:
            if self._since is None:
                self._since = self.db.info()["update_seq"]
                return
            while True:
                feed = self.db.changes(since=self._since, include_docs=True, limit=FEED_ROWS)
                with self._lock:
                    for row in feed["results"]:
                        self._apply_change(row.get("doc") or {"_id": row["id"]})
                self._since = feed["last_seq"]
                if len(feed["results"]) < FEED_ROWS:
                    return

    def _apply_change(self, doc: Doc) -> None:
        doc_id = doc["_id"]
        ready = self._queues.get(doc.get("queue", ""))
        if ready is not None and doc.get("state") == READY and not doc.get("_deleted"):
            group = doc.get("queue_group", 0)
            place = self._place(group, doc_id)
            ready.gone.discard(doc_id)
            ready.upsert(place, doc.get("available_at", ""), doc_id, doc)
            return
        if ready is not None:
            ready.gone.add(doc_id)  # a stale index row of it must not bring it back
        for other in self._queues.values():
            if doc_id in other.entries or doc_id in other.docs:
                other.discard(doc_id)

    def _place(self, group: int, doc_id: str) -> Place:
        key = doc_id.encode("utf-8")
        own_slot = zlib.crc32(key) % self.slots == self.slot
        # Another hash for shares, so that slots still split each site's share.
        # Shares are ranked from this site's onwards (0 = its own): site i
        # turns to share i+1 first, so two sites out of work of their own do
        # not both turn to the same third one.
        rank = (zlib.adler32(key) % self.shares - self.share) % self.shares
        return (rank, int(group or 0), 0 if own_slot else 1)

    def _take(self, ready: ReadyQueue, queue: str, wanted: int, now: datetime) -> list[Doc]:
        """Up to `wanted` leasable documents: from the set, reading more of the view as needed."""
        for _ in range(MAX_ROUNDS):
            with self._lock:
                ids = ready.take_due(wanted, iso(now))
                cached = {i: ready.docs.pop(i) for i in ids if i in ready.docs}
                more = len(ids) < wanted and not ready.exhausted
                low = len(ready.entries) < LOW_WATER and not ready.exhausted
            if low and not more:
                self._prefetch(ready, queue)
            missing = [i for i in ids if i not in cached]
            docs = dict(cached)
            try:
                docs |= self.db.get_many(missing) if missing else {}
            finally:
                taken = [docs[i] for i in ids if is_leasable(docs.get(i), queue, now)]
                with self._lock:  # only what goes on to be recorded stays in flight
                    ready.in_flight.difference_update(set(ids) - {d["_id"] for d in taken})
            if taken:
                return taken
            if not ids and not more:
                return []
            if more:
                pages = ready.pages
                with ready.page_lock:  # after a prefetch in progress, if any
                    if not ready.exhausted and ready.pages == pages:
                        self._read_page(ready, queue, fresh=False)
        return []

    def _prefetch(self, ready: ReadyQueue, queue: str) -> None:
        """Read the next page in the background, so that no call waits for it."""
        with self._lock:
            if ready.prefetching:
                return
            ready.prefetching = True

        def read_next_page() -> None:
            try:
                with ready.page_lock:
                    if not ready.exhausted:
                        self._read_page(ready, queue, fresh=False)
            except Exception:  # a call that runs dry reads the page itself
                log.warning("reading the next %s candidates failed", queue, exc_info=True)
            finally:
                ready.prefetching = False

        threading.Thread(target=read_next_page, name=f"candidates-{queue}", daemon=True).start()

    # ---------------------------------------------------------------- recording

    def _record(
        self,
        batch: list[Doc],
        queue: str,
        holder: str,
        now: datetime,
        duration: timedelta,
        actor: str,
    ) -> list[Doc]:
        # An album written moments ago may be a phantom of an import that died
        # before its event (or one still in flight): leasing it would put a lease
        # in the log on top of a fact that is not there. Those few are checked.
        young = {doc["_id"]: doc for doc in batch if not is_settled(doc)}
        phantoms = unbacked(self.db, young) if young else set()
        batch = [doc for doc in batch if doc["_id"] not in phantoms]
        decide = lease_decision(queue, holder, now + duration, now)
        # The hot path skips confirming states against the log: a lease decides
        # only on ready states, and a ready phantom (a reaper or a not-found that
        # died before its event) only put work back in the queue; leasing it
        # hands out work that was due anyway.
        outcomes = commit(
            self.db,
            [(doc["_id"], decide) for doc in batch],
            actor=actor,
            now=now,
            states={doc["_id"]: doc for doc in batch},
            retry_lost=0,
            trust_states=True,
        )
        return [o.state for o in outcomes if o.recorded and o.state is not None]

    def forget(self, queue: str | None = None) -> None:
        """Drop what this process knows of a queue (or all): the next call reads it afresh."""
        with self._feed_lock, self._lock:
            for name in [queue] if queue is not None else list(self._queues):
                self._queues.pop(name, None)


def reap_expired_leases(
    db: Database, now: datetime, *, actor: str = "scheduler", limit: int = 1000
) -> int:
    """Return every lease that expired by `now` to its queue; return how many."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        lease = (state or {}).get("lease") or {}
        if (state or {}).get("state") != LEASED or lease.get("expires_at", "~") > iso(now):
            return None
        return "lease_expired", {
            "holder": lease.get("holder"),
            "holders": expired_holders(lease, iso(now)),
        }

    reaped = 0
    while True:
        rows = db.view(
            "queues",
            "leases_by_expiry",
            endkey=iso(now),
            limit=limit,
            include_docs=True,
            reduce=False,  # the view has a _count reduce, which refuses include_docs
        )
        docs = {row["id"]: row["doc"] for row in rows if row.get("doc")}
        outcomes = commit(
            db, [(doc_id, decide) for doc_id in docs], actor=actor, now=now, states=docs
        )
        recorded = sum(1 for o in outcomes if o.recorded)
        reaped += recorded
        # A full page that reaped nothing would be read again as it is: stop there.
        if len(rows) < limit:
            return reaped
        if not recorded:
            return reaped
