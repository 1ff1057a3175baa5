"""Write-behind: swarms to the peers database, transfers and snatches as events.

Announces are answered from memory; once per `tracker.flush_seconds` the
server drains what changed (app.tracker.swarm.Flush) and hands it to this
writer in a worker thread: one `_bulk_docs` for the swarms that changed,
however many announces touched them, and one event commit for the users'
transfer totals and the torrents' snatches. A failed write is kept and merged
into the next one, so a CouchDB hiccup delays facts but loses none. Activity
goes in batches with an id: a batch that failed halfway is retried as it
was, with the same id, so what it already recorded is not counted twice.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.couch import CouchError, Database
from app.events import ConcurrencyError
from app.timeutil import iso
from app.tracker.peersdb import swarm_doc_id
from app.tracker.swarm import Flush

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclasses.dataclass
class ActivityBatch:
    """Transfers and snatches recorded together; once tried, its facts never change."""

    transfers: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)
    snatches: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    batch: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    tried: bool = False

    def __bool__(self) -> bool:
        return bool(self.transfers or self.snatches)

    def add(self, transfers: dict[int, tuple[int, int]], snatches: list[tuple[str, int]]) -> None:
        for user, (up, down) in transfers.items():
            old_up, old_down = self.transfers.get(user, (0, 0))
            self.transfers[user] = (old_up + up, old_down + down)
        self.snatches.extend(snatches)


class WriteBehind:
    """Writes drained changes; keeps what failed for the next attempt."""

    def __init__(self, db: Database, peers_db: Database, *, clock: Callable[[], datetime]) -> None:
        self.db, self.peers_db, self.clock = db, peers_db, clock
        self.revs: dict[str, str] = {}  # swarm doc id -> last _rev we know
        self._swarms: dict[str, Doc | None] = {}
        self._batches: list[ActivityBatch] = []  # oldest first; only the last may be untried

    def remember(self, docs: list[Doc]) -> None:
        """Note the revisions of swarm documents loaded at start."""
        self.revs.update({doc["_id"]: doc["_rev"] for doc in docs})

    def write(self, flush: Flush) -> bool:
        """Write this flush and anything left from failed ones; False when CouchDB failed."""
        self._merge(flush)
        try:
            self._write_swarms()
            self._write_activity()
        except (CouchError, ConcurrencyError) as error:
            log.warning("tracker write-behind failed, keeping it for the next flush: %s", error)
            return False
        return True

    @property
    def pending(self) -> bool:
        return bool(self._swarms or self._batches)

    def _merge(self, flush: Flush) -> None:
        self._swarms.update(flush.swarms)  # the newest state of a swarm supersedes older ones
        if not (flush.transfers or flush.snatches):
            return
        if not self._batches or self._batches[-1].tried:
            self._batches.append(ActivityBatch())
        self._batches[-1].add(flush.transfers, flush.snatches)

    def _write_swarms(self) -> None:
        for _attempt in range(3):
            docs = {ih: doc for ih, body in self._swarms.items() if (doc := self._doc(ih, body))}
            self._swarms = {ih: self._swarms[ih] for ih in docs}  # an unstored empty swarm: done
            if not docs:
                return
            conflicted = []
            for result in self.peers_db.bulk_docs(list(docs.values())):
                info_hash = result.id.split(":", 1)[1]
                if result.ok and result.rev and not docs[info_hash].get("_deleted"):
                    self.revs[result.id] = result.rev
                elif result.ok:
                    self.revs.pop(result.id, None)
                elif result.error == "conflict":
                    conflicted.append(result.id)
                    continue
                else:
                    log.error("tracker: swarm %s not stored: %s", result.id, result.reason)
                del self._swarms[info_hash]
            if not conflicted:
                return
            self._refresh_revs(conflicted)  # someone else (the reaper job) wrote it: ours is newer

    def _doc(self, info_hash: str, body: Doc | None) -> Doc | None:
        doc_id = swarm_doc_id(info_hash)
        rev = self.revs.get(doc_id)
        if body is None:
            return {"_id": doc_id, "_rev": rev, "_deleted": True} if rev else None
        doc = {"_id": doc_id, "type": "swarm", **body, "updated_at": iso(self.clock())}
        if rev:
            doc["_rev"] = rev
        return doc

    def _refresh_revs(self, doc_ids: list[str]) -> None:
        for row in self.peers_db.all_docs(doc_ids, include_docs=False):
            value = row.get("value") or {}
            if "rev" in value and not value.get("deleted"):
                self.revs[row["key"]] = value["rev"]
            else:
                self.revs.pop(row["key"], None)

    def _write_activity(self) -> None:
        from app.tracker.activity import record_activity

        while self._batches:
            batch = self._batches[0]
            batch.tried = True
            record_activity(
                self.db, batch.transfers, batch.snatches, now=self.clock(), batch=batch.batch
            )
            self._batches.pop(0)
