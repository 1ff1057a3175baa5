"""What one process knows of a queue's ready work, and where a slow lease call went.

Used by app/queues/leasing.py: the candidates of one queue in one process, in
heaps by (this site's share first, queue group, own slot first), ordered by
`available_at` then id (another site's never-tried work: the other way round).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from app.store.events import Doc

log = logging.getLogger(__name__)

SKIP_NOT_DUE = 1000  # items due later that one call looks past in a newest-first heap
CACHED_DOCS = 5000  # per queue, documents kept in memory; beyond that only ids and order

Order = tuple[str, str, str]  # (sort key, available_at, id) inside one heap
# Which heap an item is in; heaps are taken in sorted order:
# (0 this site's share / 1 another site's, queue group, 0 own slot / 1 another process's)
Place = tuple[int, int, int]


@dataclasses.dataclass
class ReadyQueue:
    """The ready items of one queue that this process knows of."""

    heaps: dict[Place, list[Order]] = dataclasses.field(default_factory=dict)
    entries: dict[str, tuple[Place, Order]] = dataclasses.field(default_factory=dict)
    docs: dict[str, Doc] = dataclasses.field(default_factory=dict)
    cursor: list[Any] | None = None  # the next view page starts after this key
    exhausted: bool = False  # the view was read to its end
    page_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    prefetching: bool = False
    in_flight: set[str] = dataclasses.field(default_factory=set)  # taken, being recorded
    index_rev: str = ""  # the queues design document the first read used
    # Items the feed saw leave the ready state since the set started. A row of
    # the (stale) index that is neither here nor among the entries has not
    # changed since the first read, so it is still ready: pages need no documents.
    gone: set[str] = dataclasses.field(default_factory=set)
    pages: int = 0  # pages read so far: a call that waited for one need not read another
    pushed: int = 0  # heap entries, live or stale

    def upsert(self, place: Place, available_at: str, doc_id: str, doc: Doc | None) -> None:
        order = (_sort_key(place, available_at, doc_id), available_at, doc_id)
        if doc_id in self.in_flight:
            return  # a call is recording it: a change read meanwhile must not offer it again
        if self.entries.get(doc_id) != (place, order):
            self.pushed += 1
            self.entries[doc_id] = (place, order)
            heapq.heappush(self.heaps.setdefault(place, []), order)
        if doc is not None and (doc_id in self.docs or len(self.docs) < CACHED_DOCS):
            self.docs[doc_id] = doc

        if self.pushed > 2 * len(self.entries) + 1000:
            self._compact()

    def discard(self, doc_id: str) -> None:
        self.entries.pop(doc_id, None)  # its heap entry is skipped when it surfaces
        self.docs.pop(doc_id, None)

    def _compact(self) -> None:
        """Rebuild the heaps from the live entries: items leased elsewhere leave stale
        heap entries behind, and a heap this process rarely reaches would keep them."""
        heaps: dict[Place, list[Order]] = {}
        for place, order in self.entries.values():
            heaps.setdefault(place, []).append(order)
        for heap in heaps.values():
            heapq.heapify(heap)
        self.heaps, self.pushed = heaps, len(self.entries)

    def take_due(self, wanted: int, now_iso: str) -> list[str]:
        """Up to `wanted` due ids: this site's share first, then never-tried before
        retries, own slot before others."""
        taken: list[str] = []
        for place in sorted(self.heaps):
            heap = self.heaps[place]
            not_yet: list[Order] = []  # a newest-first heap may hold due items below these
            while heap and len(taken) < wanted:
                _, available_at, doc_id = heap[0]
                if self.entries.get(doc_id) != (place, heap[0]):
                    heapq.heappop(heap)  # moved or gone since it was pushed
                    continue
                if available_at > now_iso:
                    if not _newest_first(place) or len(not_yet) >= SKIP_NOT_DUE:
                        break  # oldest first: the rest of this heap is due later still
                    not_yet.append(heapq.heappop(heap))
                    continue
                heapq.heappop(heap)
                del self.entries[doc_id]
                taken.append(doc_id)
            for order in not_yet:
                heapq.heappush(heap, order)
        self.pushed -= len(taken)
        self.in_flight.update(taken)
        return taken


def _newest_first(place: Place) -> bool:
    return place[0] > 0 and place[1] == 0


def _sort_key(place: Place, available_at: str, doc_id: str) -> str:
    """Oldest first, except never-tried work of another site's share: newest first.

    A site works through its own share from the head; another site that has
    run out of its own takes from the far end of it (work stealing), so the
    two meet only at the end, and sites that cannot see each other's leases
    yet rarely hand out the same item. (Code points are mirrored: a min-heap
    of mirrored strings gives the largest first.)
    """
    if _newest_first(place):
        return "".join(chr(0x10FFFF - ord(c)) for c in f"{available_at}\x00{doc_id}")
    return available_at


class PhaseTimer:
    """Where a slow lease call spent its time, for the log (an operator's first question)."""

    SLOW_SECONDS = 2.0

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.spent: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.spent[phase] += time.monotonic() - started

    def report_if_slow(self, what: str) -> None:
        total = time.monotonic() - self.began
        if total >= self.SLOW_SECONDS:
            ranked = sorted(self.spent.items(), key=lambda kv: -kv[1])
            phases = ", ".join(f"{name} {secs:.2f} s" for name, secs in ranked)
            log.warning("slow %s: %.2f s (%s)", what, total, phases)
