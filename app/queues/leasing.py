"""Leased work queues shared by every task kind (albums, downloads, URLs).

A queued aggregate's projection carries `queue`, `state` ("ready", "leased",
…), `queue_group` (0 = never tried, 1 = retry) and `available_at`. The view
`queues/ready` orders ready work by [queue, queue_group, available_at, id], so
one range read gives never-tried work first, then retries that are due.

The point of decision is the projection: a lease writes it with the `_rev`
it was read with, so of two callers that picked the same album exactly one
wins; the other's write conflicts, which means "taken, try the next one",
never an error. One event then records the whole lease (app/store/events.py).

Under load every caller reading the head of the same view would pick the same
albums and collide. Inside one process, calls share one buffer of candidates
per queue and never get the same one twice (taken ones are "in flight" until
recorded); across processes, each prefers its own slot of ids (`lease_slot`
of `lease_slots`), so processes work on distinct windows.

Keeping a view index current costs work for every projection written, and on
the bundled server that work (~1,700 docs/s) dominates. So a process reads the
index fresh at most every `buffer_seconds`, and in between walks on through it
with `stale=ok` from a cursor (keys are unique: the id is the last element).
include_docs gives the current documents, so rows that went stale are
dropped. Work that became ready since the last fresh read waits at most
`buffer_seconds`, and "nothing to lease" is only ever answered by a fresh read.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.store.couch import Database
from app.store.events import Doc, commit
from app.timeutil import iso

log = logging.getLogger(__name__)

LEASED = "leased"
READY = "ready"
MAX_ROUNDS = 50  # lease rounds per call: a backstop, rounds normally end on their own


def ready_range(queue: str, now: datetime) -> dict[str, Any]:
    """The queues/ready key range of work that may be handed out at `now`."""
    return {"startkey": [queue], "endkey": [queue, 1, iso(now), {}]}


def is_leasable(state: Doc | None, queue: str, now: datetime) -> bool:
    return (
        state is not None
        and state.get("state") == READY
        and state.get("queue") == queue
        and state.get("available_at", "") <= iso(now)
    )


def apply_lease_event(state: Doc, event: Doc) -> bool:
    """Apply the lease life-cycle events every queued aggregate shares; True if handled."""
    name, data = event["name"], event["data"]
    if name == "leased":
        state["state"] = LEASED
        state["lease"] = {
            "holder": data["holder"],
            "leased_at": event["at"],
            "expires_at": data["expires_at"],
        }
        state["leases"] = state.get("leases", 0) + 1
    elif name in ("lease_expired", "released"):
        if state.get("state") == LEASED:
            state["state"] = READY
            state["available_at"] = event["at"]
        state["lease"] = None
    else:
        return False
    return True


def lease_decision(
    queue: str, holder: str, expires_at: datetime, now: datetime
) -> Callable[[Doc | None], tuple[str, dict[str, Any]] | None]:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not is_leasable(state, queue, now):
            return None
        return "leased", {"holder": holder, "expires_at": iso(expires_at)}

    return decide


@dataclasses.dataclass
class _Candidates:
    """One queue's candidates in one process, shared by its concurrent lease calls."""

    docs: collections.deque[Doc] = dataclasses.field(default_factory=collections.deque)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # guards docs
    refill_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    generation: int = 0  # refills done; a caller that waited for one sees it moved
    empty_generation: int = -1  # the refill that found the queue empty
    fresh_at: float = float("-inf")  # when the index was last read fresh
    cursor: list[Any] | None = None  # last key read, for the stale walk
    contended: bool = False  # this process just lost races here
    in_flight: set[str] = dataclasses.field(default_factory=set)  # taken, not yet recorded
    prefetching: bool = False


class QueueLeaser:
    """Hands out ready work of one database to concurrent lease calls, fairly.

    Calls share one buffer of candidates per queue. Taking from it is a short
    critical section; recording a lease (the conditional projection write and
    the event) runs outside any lock, so calls do not wait behind each other's
    writes. When the buffer runs low a background thread reads the next window
    (prefetch), so a call rarely waits for an index read; when it does run
    dry, one call refills while the others wait for that same read.
    """

    def __init__(
        self,
        db: Database,
        *,
        lease_slot: int = 0,
        lease_slots: int = 1,
        buffer_seconds: float = 5.0,
        prefetch: bool = True,
    ) -> None:
        self.db = db
        self.slot, self.slots = lease_slot, max(1, lease_slots)
        self.buffer_seconds = buffer_seconds
        self.prefetch = prefetch
        self._guard = threading.Lock()
        self._queues: dict[str, _Candidates] = {}

    def _candidates(self, queue: str) -> _Candidates:
        with self._guard:
            return self._queues.setdefault(queue, _Candidates())

    def lease(
        self, queue: str, holder: str, rows: int, now: datetime, duration: timedelta, actor: str
    ) -> list[Doc]:
        """Lease up to `rows` ready items of `queue` to `holder`; return their projections."""
        leased: list[Doc] = []
        # Every round takes candidates out of the buffer or refills it, and every
        # lost race moves a projection forward, so rounds end; the cap is a backstop.
        for _ in range(MAX_ROUNDS):
            if len(leased) >= rows:
                break
            batch = self._take(queue, rows - len(leased), now)
            if not batch:
                break
            try:
                leased.extend(self._record(batch, queue, holder, now, duration, actor))
            finally:
                self._release(queue, batch)
        return leased

    def _record(
        self,
        batch: list[Doc],
        queue: str,
        holder: str,
        now: datetime,
        duration: timedelta,
        actor: str,
    ) -> list[Doc]:
        decide = lease_decision(queue, holder, now + duration, now)
        outcomes = commit(
            self.db,
            [(doc["_id"], decide) for doc in batch],
            actor=actor,
            now=now,
            states={doc["_id"]: doc for doc in batch},
            retry_lost=0,
        )
        if any(o.lost_race for o in outcomes):
            self._candidates(queue).contended = True
        return [o.state for o in outcomes if o.recorded and o.state is not None]

    def _release(self, queue: str, batch: list[Doc]) -> None:
        cands = self._candidates(queue)
        with cands.lock:
            cands.in_flight.difference_update(doc["_id"] for doc in batch)

    def _take(self, queue: str, wanted: int, now: datetime) -> list[Doc]:
        """Up to `wanted` candidates: from the buffer, else from the next read."""
        cands = self._candidates(queue)
        for _ in range(MAX_ROUNDS):
            taken = self._pop(cands, queue, wanted, now)
            if taken:
                return taken
            seen = cands.generation
            with cands.refill_lock:
                if cands.generation != seen:  # another call refilled while we waited
                    if cands.empty_generation == cands.generation:
                        return []
                    continue
                fresh = self._needs_fresh_read(cands)
                rows_read = self._refill(cands, queue, wanted, now, fresh=fresh)
                if fresh and not rows_read:
                    cands.empty_generation = cands.generation
                    return []  # a current index has nothing ready: the queue is empty
            # Rows whose documents moved on between the index read and the document
            # fetch (another process leased them) are no proof of an empty queue: read on.
        return []

    def _pop(self, cands: _Candidates, queue: str, wanted: int, now: datetime) -> list[Doc]:
        taken: list[Doc] = []
        with cands.lock:
            while cands.docs and len(taken) < wanted:
                doc = cands.docs.popleft()
                if is_leasable(doc, queue, now) and doc["_id"] not in cands.in_flight:
                    taken.append(doc)
            cands.in_flight.update(doc["_id"] for doc in taken)
            low = len(cands.docs) < max(2 * wanted, 100)
        if taken and low and self.prefetch:
            self._start_prefetch(cands, queue, wanted, now)
        return taken

    def _start_prefetch(self, cands: _Candidates, queue: str, wanted: int, now: datetime) -> None:
        with cands.lock:
            if cands.prefetching:
                return
            cands.prefetching = True

        def prefetch() -> None:
            try:
                with cands.refill_lock:
                    self._refill(cands, queue, wanted, now, fresh=self._needs_fresh_read(cands))
            except Exception:  # a lease call refills by itself; this was only a head start
                log.warning("prefetching %s candidates failed", queue, exc_info=True)
            finally:
                cands.prefetching = False

        threading.Thread(target=prefetch, name=f"prefetch-{queue}", daemon=True).start()

    def _needs_fresh_read(self, cands: _Candidates) -> bool:
        age = time.monotonic() - cands.fresh_at
        return cands.cursor is None or age > self.buffer_seconds

    def _refill(
        self, cands: _Candidates, queue: str, wanted: int, now: datetime, *, fresh: bool
    ) -> int:
        """Read the next window of candidates into the buffer, own slot first.

        A fresh read starts at the head of the queue with a current index; a
        stale one (stale=ok: no index update) goes on from the cursor. When a
        stale walk reaches the end, the next read is fresh. Returns the rows read.
        """
        window = max(wanted * self.slots * 2, 200)
        params: dict[str, Any] = dict(ready_range(queue, now), limit=window, include_docs=True)
        if fresh:
            cands.fresh_at = time.monotonic()
        else:
            params.update(startkey=cands.cursor, skip=1, stale="ok")
        rows = self.db.view("queues", "ready", reduce=False, **params)
        cands.cursor = rows[-1]["key"] if len(rows) == window else None
        docs = [row["doc"] for row in rows if is_leasable(row.get("doc"), queue, now)]
        # Own slot first spreads processes over distinct candidates, but only within
        # a queue group: never-tried work still comes before every retry (stable sort).
        if cands.contended:
            # Another process chases the same head (same slot, or slots not set):
            # take this window in random order, so the two stop colliding item by item.
            cands.contended = False
            random.shuffle(docs)
        docs.sort(key=lambda d: (d.get("queue_group", 0), self._slot_of(d["_id"]) != self.slot))
        with cands.lock:
            cands.docs = collections.deque(d for d in docs if d["_id"] not in cands.in_flight)
            cands.generation += 1
        return len(rows)

    def _slot_of(self, doc_id: str) -> int:
        return zlib.crc32(doc_id.encode("utf-8")) % self.slots

    def forget(self, queue: str | None = None) -> None:
        """Drop buffered candidates (after a reaper run, or in tests)."""
        with self._guard:
            for name in [queue] if queue is not None else list(self._queues):
                cands = self._queues.get(name)
                if cands is not None:
                    with cands.lock:
                        cands.docs.clear()
                        cands.cursor = None
                        cands.fresh_at = float("-inf")


def reap_expired_leases(
    db: Database, now: datetime, *, actor: str = "scheduler", limit: int = 1000
) -> int:
    """Return every lease that expired by `now` to its queue; return how many."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        lease = (state or {}).get("lease") or {}
        if (state or {}).get("state") != LEASED or lease.get("expires_at", "~") > iso(now):
            return None
        return "lease_expired", {"holder": lease.get("holder")}

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
        if len(rows) < limit or not recorded:
            return reaped
