"""Write-behind: swarms and running tallies to the peers database, summaries as events.

Announces are answered from memory; once per `tracker.flush_seconds` the
server drains what changed (app.tracker.swarm.Flush) and hands it to this
writer in a worker thread: one `_bulk_docs` for the swarms that changed,
however many announces touched them, and one for the tallies (the traffic
and snatches of the current hour, app.tracker.activity) that changed. A tally
becomes an event (a summary) when it *closes*:

- at the first flush after its hour ends (`reason: "hour"`, `until` the hour's end);
- when a client of its user stops (`"stopped"`): the session's traffic is final;
- when the tracker shuts down cleanly (`"shutdown"`), so that nothing waits in limbo.

A torrent's tally (who completed it) closes at the flush that saw the snatch
(`"snatched"`): snatches are rare, and /api/counts, which sites poll, then
needs nothing but the projection.

A closing tally is written to the peers database before it is recorded, and
keeps the batch id it had while open, so the event it becomes is recorded once
however often a failed write is retried (the projection remembers the id),
even after a crash between the two. One closing per aggregate at a time: a
newer tally of the same user waits until the older one is recorded. A failed
write is kept and tried again at the next flush, so a CouchDB hiccup delays
facts but loses none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from app.store.couch import CouchError, Database
from app.store.events import ConcurrencyError, unbacked
from app.timeutil import iso, parse_iso
from app.tracker.accounts import tracked_doc_id, tracker_user_doc_id
from app.tracker.activity import (
    USER_PREFIX,
    activity_doc_id,
    new_tally,
    record_summaries,
)
from app.tracker.peersdb import swarm_doc_id
from app.tracker.swarm import Flush

log = logging.getLogger(__name__)

Doc = dict[str, Any]
HOUR_KEY = 13  # len("2025-01-31T13"): ISO times that share this prefix share their hour


class WriteBehind:
    """Writes drained changes; keeps what failed for the next attempt."""

    def __init__(self, db: Database, peers_db: Database, *, clock: Callable[[], datetime]) -> None:
        self.db, self.peers_db, self.clock = db, peers_db, clock
        self.revs: dict[str, str] = {}  # peers database doc id -> last _rev we know
        self._swarms: dict[str, Doc | None] = {}
        self._open: dict[str, Doc] = {}  # aggregate id -> its open tally
        self._closing: dict[str, Doc] = {}  # aggregate id -> closed tally, not recorded yet
        self._tried: set[str] = set()  # closings tried once: their facts never change again
        self._fresh: dict[int, dict[str, list[float]]] = {}  # user -> Flush.fresh
        self._stopping: set[int] = set()  # users to close out once their last closing is in
        self._changed: set[str] = set()  # aggregates whose activity doc must be rewritten
        self._oldest_hour: str | None = None  # the earliest hour among open tallies

    def remember(self, docs: list[Doc]) -> None:
        """Note the revisions of swarm documents loaded at start."""
        self.revs.update({doc["_id"]: doc["_rev"] for doc in docs})

    def restore(self, docs: Iterable[Doc]) -> dict[int, dict[str, list[float]]]:
        """Carry on from the tallies stored before a restart or crash; return their peers' counters.

        A tally whose event is in already (a crash between recording it and
        rewriting its document) is dropped here, by its batch id.
        """
        fresh: dict[int, dict[str, list[float]]] = {}
        for doc in docs:
            aggregate = doc["aggregate"]
            self.revs[doc["_id"]] = doc["_rev"]
            if doc.get("open"):
                self._open[aggregate] = doc["open"]
            if doc.get("closing"):
                self._closing[aggregate] = doc["closing"]
                self._tried.add(aggregate)
            if doc.get("peers"):
                fresh[int(aggregate[len(USER_PREFIX) :])] = doc["peers"]
            self._changed.add(aggregate)  # rewritten at the first flush, with fresh counters
        aggregates = set(self._open) | set(self._closing)
        states = self.db.get_many(sorted(aggregates)) if aggregates else {}
        # a projection of a flush that died before its event does not count as
        # recorded: the tally is kept, and recorded again once that is rolled back
        for aggregate in unbacked(self.db, states):
            states.pop(aggregate)
        for tallies in (self._closing, self._open):
            for aggregate, tally in list(tallies.items()):
                if (states.get(aggregate) or {}).get("last_batch") == tally["batch"]:
                    del tallies[aggregate]
                    self._tried.discard(aggregate)
        self._oldest_hour = min((t["from"][:HOUR_KEY] for t in self._open.values()), default=None)
        return fresh

    def unrecorded_snatches(self) -> dict[str, int]:
        """Snatches per info hash held in tallies, not in events yet (for the scrape count)."""
        counts: dict[str, int] = {}
        for tallies in (self._open, self._closing):
            for aggregate, tally in tallies.items():
                if "users" in tally:
                    info_hash = aggregate.split(":", 1)[1]
                    counts[info_hash] = counts.get(info_hash, 0) + len(tally["users"])
        return counts

    def write(self, flush: Flush, *, final: bool = False) -> bool:
        """Write this flush and anything left from failed ones; False when CouchDB failed.

        With `final` (a clean shutdown) every tally closes.
        """
        now = self.clock()
        stamp = iso(now)
        self._swarms.update(flush.swarms)  # the newest state of a swarm supersedes older ones
        self._close_ended_hours(stamp)  # before this flush's traffic, which is the new hour's
        self._merge(flush, stamp)
        self._stopping |= flush.stopped
        self._stopping = {u for u in self._stopping if not self._close_session(u, stamp)}
        for aggregate in [a for a in self._open if not a.startswith(USER_PREFIX)]:
            self._close(aggregate, stamp, "snatched")  # a torrent's snatches count at once
        if final:
            for aggregate in list(self._open):
                self._close(aggregate, stamp, "shutdown")
        try:
            self._write_swarms()
            self._write_tallies()
            if self._record(now):
                self._write_tallies()
        except (CouchError, ConcurrencyError) as error:
            log.warning("tracker write-behind failed, keeping it for the next flush: %s", error)
            return False
        return True

    @property
    def pending(self) -> bool:
        """Something to write, or an open tally whose hour has ended."""
        if self._swarms or self._changed or self._closing or self._stopping:
            return True
        return self._oldest_hour is not None and self._oldest_hour < iso(self.clock())[:HOUR_KEY]

    # ------------------------------------------------------------ tallies

    def _tally(self, aggregate: str, stamp: str) -> Doc:
        tally = self._open.get(aggregate)
        if tally is None:
            tally = self._open[aggregate] = new_tally(aggregate, stamp)
            if self._oldest_hour is None or stamp[:HOUR_KEY] < self._oldest_hour:
                self._oldest_hour = stamp[:HOUR_KEY]
        self._changed.add(aggregate)
        return tally

    def _merge(self, flush: Flush, stamp: str) -> None:
        for user, (up, down) in flush.transfers.items():
            if up > 0 or down > 0:
                tally = self._tally(tracker_user_doc_id(user), stamp)
                tally["uploaded"] += max(0, up)
                tally["downloaded"] += max(0, down)
        for info_hash, user in flush.snatches:
            self._tally(tracker_user_doc_id(user), stamp)["snatched"].append(info_hash)
            self._tally(tracked_doc_id(info_hash), stamp)["users"].append(user)
        for user, peers in flush.fresh.items():
            if peers:
                self._fresh[user] = peers
            else:
                self._fresh.pop(user, None)
            self._changed.add(tracker_user_doc_id(user))

    def _close_ended_hours(self, stamp: str) -> None:
        if self._oldest_hour is None or self._oldest_hour >= stamp[:HOUR_KEY]:
            return
        for aggregate, tally in list(self._open.items()):
            if tally["from"][:HOUR_KEY] < stamp[:HOUR_KEY]:
                self._close(aggregate, _end_of_hour(tally["from"]), "hour")
        self._oldest_hour = min((t["from"][:HOUR_KEY] for t in self._open.values()), default=None)

    def _close_session(self, user: int, stamp: str) -> bool:
        """Close a user's tally and those of the torrents they completed in it; False: later."""
        aggregate = tracker_user_doc_id(user)
        snatched = list(self._open.get(aggregate, {}).get("snatched", ()))
        if not self._close(aggregate, stamp, "stopped"):
            return False
        for info_hash in snatched:  # the snatch counts everywhere once the session is in
            self._close(tracked_doc_id(info_hash), stamp, "stopped")
        return True

    def _close(self, aggregate: str, until: str, reason: str) -> bool:
        """Close an aggregate's open tally; False when an older one must be recorded first."""
        tally = self._open.get(aggregate)
        if tally is None:
            return True
        closing = self._closing.get(aggregate)
        if closing is not None and aggregate in self._tried:
            return False
        if closing is None:
            self._closing[aggregate] = tally | {"until": until, "reason": reason}
        else:  # closed earlier in this same flush and never written: take the rest too
            for key in ("uploaded", "downloaded"):
                if key in tally:
                    closing[key] += tally[key]
            for key in ("snatched", "users"):
                if key in tally:
                    closing[key] = closing[key] + tally[key]
            closing.update(until=until, reason=reason)
        del self._open[aggregate]
        self._changed.add(aggregate)
        return True

    def _record(self, now: datetime) -> bool:
        """Record every closing tally in one commit; True when there were any."""
        if not self._closing:
            return False
        summaries = {aggregate: dict(tally) for aggregate, tally in self._closing.items()}
        self._tried |= set(summaries)
        record_summaries(self.db, summaries, now=now)
        for aggregate in summaries:
            del self._closing[aggregate]
            self._tried.discard(aggregate)
            self._changed.add(aggregate)
        return True

    def _write_tallies(self) -> None:
        bodies: dict[str, Doc | None] = {}
        for aggregate in self._changed:
            body: Doc = {
                "type": "activity",
                "aggregate": aggregate,
                "open": self._open.get(aggregate),
                "closing": self._closing.get(aggregate),
            }
            if aggregate.startswith(USER_PREFIX):
                body["peers"] = self._fresh.get(int(aggregate[len(USER_PREFIX) :]), {})
            empty = not (body["open"] or body["closing"] or body.get("peers"))
            bodies[activity_doc_id(aggregate)] = None if empty else body
        left = self._store(bodies)
        self._changed = {a for a in self._changed if activity_doc_id(a) in left}

    # ------------------------------------------------------------ documents

    def _write_swarms(self) -> None:
        bodies = {
            swarm_doc_id(ih): None if body is None else {"type": "swarm", **body}
            for ih, body in self._swarms.items()
        }
        left = self._store(bodies)
        self._swarms = {ih: body for ih, body in self._swarms.items() if swarm_doc_id(ih) in left}

    def _store(self, bodies: dict[str, Doc | None]) -> set[str]:
        """Write peers-database documents (None: delete); return the ids still not stored.

        A conflict means someone else (the reaper job) wrote it, or an earlier
        write of ours landed though its answer was lost: ours is newer, so it
        is written again over the current revision.
        """
        for _attempt in range(3):
            docs = {
                doc_id: doc for doc_id, body in bodies.items() if (doc := self._doc(doc_id, body))
            }
            bodies = {doc_id: bodies[doc_id] for doc_id in docs}  # an unstored deletion: done
            if not docs:
                return set()
            conflicted = []
            for result in self.peers_db.bulk_docs(list(docs.values())):
                if result.ok and result.rev and not docs[result.id].get("_deleted"):
                    self.revs[result.id] = result.rev
                elif result.ok:
                    self.revs.pop(result.id, None)
                elif result.error == "conflict":
                    conflicted.append(result.id)
                    continue
                else:
                    log.error("tracker: %s not stored: %s", result.id, result.reason)
                del bodies[result.id]
            if not conflicted:
                return set()
            self._refresh_revs(conflicted)
        return set(bodies)

    def _doc(self, doc_id: str, body: Doc | None) -> Doc | None:
        rev = self.revs.get(doc_id)
        if body is None:
            return {"_id": doc_id, "_rev": rev, "_deleted": True} if rev else None
        doc = {"_id": doc_id, **body, "updated_at": iso(self.clock())}
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


def _end_of_hour(stamp: str) -> str:
    start = parse_iso(stamp).replace(minute=0, second=0, microsecond=0)
    return iso(start + timedelta(hours=1))
