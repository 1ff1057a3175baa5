"""Leased work queues shared by every task kind (albums, downloads, URLs).

A queued aggregate's projection carries `queue`, `state` ("ready", "leased",
…), `queue_group` (0 = never tried, 1 = retry) and `available_at`. The view
`queues/ready` orders ready work by [queue, queue_group, available_at, id], so
one range read gives never-tried work first, then retries that are due.

Under load every lessee reading the head of the same view would collide on
the same event ids. So inside one process leasing is serialized per queue
(one lock), and candidates come from a per-process buffer that prefers this
process's own slot of ids (`lease_slot` of `lease_slots`), so processes work
on distinct windows. A lost race (409 on the event id) means "taken, try the
next one", never an error.

Keeping a view index current costs work for every document written (two per
lease), and on the bundled server that work (~1,700 docs/s) dominates. So a
process reads the index fresh at most every `buffer_seconds`, and in between
walks on through it with `stale=ok` from a cursor (keys are unique: the id is
the last element). include_docs gives the current documents, so rows that
went stale are dropped. Work that became ready since the last fresh read waits
at most `buffer_seconds`, and "nothing to lease" is only ever answered by a
fresh read.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.couch import Database
from app.events import Doc, commit, repair_projection
from app.timeutil import iso

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


class QueueLeaser:
    """Hands out ready work of one database, one lease call per queue at a time."""

    def __init__(
        self,
        db: Database,
        *,
        lease_slot: int = 0,
        lease_slots: int = 1,
        buffer_seconds: float = 5.0,
    ) -> None:
        self.db = db
        self.slot, self.slots = lease_slot, max(1, lease_slots)
        self.buffer_seconds = buffer_seconds
        self._locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._buffers: dict[str, collections.deque[Doc]] = {}
        self._fresh_at: dict[str, float] = {}  # when the index was last read fresh
        self._cursors: dict[str, list[Any]] = {}  # last key read, for the stale walk
        self._contended: set[str] = set()  # queues where this process just lost races

    def _lock_for(self, queue: str) -> threading.Lock:
        with self._guard:
            return self._locks[queue]

    def lease(
        self, queue: str, holder: str, rows: int, now: datetime, duration: timedelta, actor: str
    ) -> list[Doc]:
        """Lease up to `rows` ready items of `queue` to `holder`; return their projections."""
        with self._lock_for(queue):
            leased: list[Doc] = []
            # Every round takes candidates out of the buffer or refills it, and every
            # lost race moves a projection forward, so rounds end; the cap is a backstop.
            for _ in range(MAX_ROUNDS):
                if len(leased) >= rows:
                    break
                batch = self._take(queue, rows - len(leased), now)
                if not batch:
                    break
                leased.extend(self._record(batch, queue, holder, now, duration, actor))
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
        lost = [o.aggregate for o in outcomes if o.lost_race]
        if lost:
            self._contended.add(queue)
            self._repair_lagging(lost, {doc["_id"]: doc for doc in batch})
        return [o.state for o in outcomes if o.recorded and o.state is not None]

    def _repair_lagging(self, lost: list[str], candidates: dict[str, Doc]) -> None:
        """Repair lost candidates whose stored projection still lags their events.

        Usually the winner has written its projection and the view drops the item.
        But a winner that crashed between its two writes leaves a projection that
        looks ready forever (until the projector job runs): without this, every
        read would offer it again and the lease call would spin on it.
        """
        stored = self.db.get_many(lost)
        for doc_id in lost:
            doc = stored.get(doc_id)
            if doc is not None and doc.get("version") == candidates[doc_id].get("version"):
                repair_projection(self.db, doc_id)

    def _take(self, queue: str, wanted: int, now: datetime) -> list[Doc]:
        """Up to `wanted` candidates: from the buffer, else from the next read."""
        buffer = self._buffers.setdefault(queue, collections.deque())
        for _ in range(MAX_ROUNDS):
            taken: list[Doc] = []
            while buffer and len(taken) < wanted:
                doc = buffer.popleft()
                if is_leasable(doc, queue, now):
                    taken.append(doc)
            if taken:
                return taken
            fresh = self._needs_fresh_read(queue)
            buffer, rows_read = self._refill(queue, wanted, now, fresh=fresh)
            if fresh and not rows_read:
                return []  # a current index has nothing ready: the queue is empty
            # Rows whose documents moved on between the index read and the document
            # fetch (another process leased them) are no proof of an empty queue: read on.
        return []

    def _needs_fresh_read(self, queue: str) -> bool:
        age = time.monotonic() - self._fresh_at.get(queue, float("-inf"))
        return queue not in self._cursors or age > self.buffer_seconds

    def _refill(
        self, queue: str, wanted: int, now: datetime, *, fresh: bool
    ) -> tuple[collections.deque[Doc], int]:
        """Read the next window of candidates into the buffer, own slot first.

        A fresh read starts at the head of the queue with a current index; a
        stale one (stale=ok: no index update) goes on from the cursor. When a
        stale walk reaches the end, the next read is fresh.
        """
        window = max(wanted * self.slots * 2, 200)
        params: dict[str, Any] = dict(ready_range(queue, now), limit=window, include_docs=True)
        if fresh:
            self._fresh_at[queue] = time.monotonic()
        else:
            params.update(startkey=self._cursors[queue], skip=1, stale="ok")
        rows = self.db.view("queues", "ready", reduce=False, **params)
        if len(rows) == window:
            self._cursors[queue] = rows[-1]["key"]
        else:
            self._cursors.pop(queue, None)  # the end: next time, read fresh from the head
        docs = [row["doc"] for row in rows if is_leasable(row.get("doc"), queue, now)]
        # Own slot first spreads processes over distinct candidates, but only within
        # a queue group: never-tried work still comes before every retry (stable sort).
        if queue in self._contended:
            # Another process chases the same head (same slot, or slots not set):
            # take this window in random order, so the two stop colliding item by item.
            self._contended.discard(queue)
            random.shuffle(docs)
        docs.sort(key=lambda d: (d.get("queue_group", 0), self._slot_of(d["_id"]) != self.slot))
        self._buffers[queue] = buffer = collections.deque(docs)
        return buffer, len(rows)

    def _slot_of(self, doc_id: str) -> int:
        return zlib.crc32(doc_id.encode("utf-8")) % self.slots

    def forget(self, queue: str | None = None) -> None:
        """Drop buffered candidates (after a reaper run, or in tests)."""
        for state in (self._buffers, self._fresh_at, self._cursors):
            if queue is None:
                state.clear()
            else:
                state.pop(queue, None)


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
