"""The read model's upkeep: repair one projection, follow the log, roll back phantoms, rebuild.

Projections are written before their event (app/store/events.py), so in normal
operation a projection is never behind the log. Two things can still leave
them apart, and the projector job heals both:
- an event the read model has not seen: one that arrived by replication, or
  whose projection write was lost. `catch_up_projections`
  (app/store/catchup.py) follows the log's `_changes` from a checkpoint and
  brings up to date every aggregate a change touches whose projection has not
  reached that change's version (events of another site always: their
  versions say nothing about ours);
- a "phantom": a projection written by a command that crashed (or could not
  reach the log) before its event was appended. The client never heard "ok".
  `repair_phantoms` follows the read model's `_changes` and refolds every
  projection whose `last_event` is missing from the log once it is older than
  `grace_seconds` (a live commit appends its event within milliseconds).
Checkpoints are `_local` documents of the read model: they never replicate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from app.store.couch import Database, DocumentConflictError, DocumentNotFoundError
from app.store.events import (
    BOOKKEEPING,
    GRACE_SECONDS,
    LOG_DDOC,
    ConcurrencyError,
    Doc,
    change_from_row,
    event_log,
    is_settled,
    project,
    projected_types,
    read_events,
)
from app.timeutil import iso, utcnow

log = logging.getLogger(__name__)

PHANTOM_CHECKPOINT_ID = "_local/phantom-checkpoint"


class InFlightError(ConcurrencyError):
    """A projection names an event the log does not have yet, and is young enough
    that its commit may still be in flight: it must not be touched now."""


def comparable(doc: Doc | None) -> Doc | None:
    """A projection as a rebuild would make it: without _rev and its write time."""
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in ("_rev", "written_at")}


def repair_projection(
    db: Database, aggregate_id: str, *, grace_seconds: float | None = None
) -> Doc | None:
    """Make one projection equal the fold of its changes in the log; return it.

    A projection with no change in the log (a phantom creation) is deleted.
    Raises InFlightError, touching nothing, when the stored projection names an
    event the log does not have and was written less than GRACE_SECONDS ago:
    its commit may be between its two writes, and folding now would undo a
    fact about to be recorded (and let a second caller lease the same album).
    Idempotent and safe to race: writes are conditional on the _rev read.
    """
    for _ in range(5):
        stored = db.get_or_none(aggregate_id)
        changes = read_events(db, aggregate_id)
        rebuilt = project(changes)
        if comparable(stored) == comparable(rebuilt):
            return stored
        if stored is not None and not is_settled(stored, grace_seconds):
            if stored.get("last_event") not in {c["event"] for c in changes}:
                raise InFlightError(f"{aggregate_id} has a commit in flight")
        try:
            if rebuilt is None:
                assert stored is not None
                db.delete(aggregate_id, stored["_rev"])
                return None
            if stored is not None:
                rebuilt["_rev"] = stored["_rev"]
            db.put(rebuilt)
        except (DocumentConflictError, DocumentNotFoundError):
            continue
        return rebuilt
    raise ConcurrencyError(f"could not repair {aggregate_id}: it keeps changing")


def repair_phantoms(db: Database, *, grace_seconds: float | None = None, limit: int = 500) -> int:
    """Roll back projections whose event never reached the log; return how many.

    Reads the read model's _changes from a checkpoint; stops before the first
    projection written less than `grace_seconds` ago (by the wall clock that
    stamped it, `written_at`), so a commit in flight is never touched, and the
    next run starts there.
    """
    grace = GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = iso(utcnow() - timedelta(seconds=grace))
    types = projected_types()
    checkpoint = db.get_or_none(PHANTOM_CHECKPOINT_ID) or {"_id": PHANTOM_CHECKPOINT_ID, "seq": 0}
    rolled_back = 0
    while True:
        feed = db.changes(since=checkpoint["seq"], limit=limit, include_docs=True)
        seen: dict[str, str] = {}  # aggregate -> the event its projection names
        last_seq, too_young = checkpoint["seq"], False
        for row in feed["results"]:
            doc = row.get("doc") or {}
            if doc.get("type") in types and doc.get("last_event"):
                if doc.get("written_at", "") > cutoff:
                    too_young = True
                    break
                seen[doc["_id"]] = doc["last_event"]
            last_seq = row["seq"]
        present = {
            row["key"]
            for row in event_log(db).all_docs(set(seen.values()), include_docs=False)
            if "error" not in row and not (row.get("value") or {}).get("deleted")
        }
        for agg, event_id in seen.items():
            if event_id not in present:
                log.warning("rolling back %s: its event %s never reached the log", agg, event_id)
                try:
                    repair_projection(db, agg, grace_seconds=grace)
                except InFlightError:  # rewritten since the feed showed it: its own commit
                    continue
                rolled_back += 1
        checkpoint["seq"] = last_seq
        try:
            db.put(checkpoint)
        except DocumentConflictError:
            return rolled_back  # another projector runs this too; it goes on from its place
        if too_young or len(feed["results"]) < limit:
            return rolled_back


def iter_change_streams(db: Database, page_size: int = 5000) -> Iterator[tuple[str, list[Doc]]]:
    """Yield (aggregate id, its changes) for every aggregate in the log.

    Pages the log's by_aggregate view, whose keys are [aggregate, version, site,
    event id]: one aggregate's rows are contiguous (in version order; `project`
    sorts them into fold order), so memory stays flat however long the log is.
    """
    current: str | None = None
    stream: list[Doc] = []
    for row in event_log(db).iter_view(LOG_DDOC, "by_aggregate", page_size=page_size):
        change = change_from_row(row)
        if change["aggregate"] != current:
            if current is not None:
                yield current, stream
            current, stream = change["aggregate"], []
        stream.append(change)
    if current is not None:
        yield current, stream


@dataclasses.dataclass
class RebuildReport:
    """What a rebuild found; with check_only nothing was written."""

    aggregates: int = 0
    events: int = 0  # changes folded (one event document may hold many)
    differing: list[str] = dataclasses.field(default_factory=list)
    without_events: list[str] = dataclasses.field(default_factory=list)
    written: int = 0
    deleted: int = 0
    conflicts_repaired: int = 0
    in_flight: list[str] = dataclasses.field(default_factory=list)  # left for the projector

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rebuild_projections(
    db: Database, *, check_only: bool = False, batch: int = 500
) -> RebuildReport:
    """Recompute every projection from the log alone; write (or with check_only, list) differences.

    Projections that no change in the log accounts for are reported and, unless
    check_only, deleted. Safe on a running system: a projection that names an
    event this pass did not fold was written after the pass read the log (or
    is a phantom), so it is refolded from the log as it is now, and a commit
    in flight is left alone (reported in `in_flight`); a write that meets a
    concurrent writer is repaired the same way and counted, never dropped.
    """
    report = RebuildReport()
    chunk: list[tuple[str, Doc | None, set[str]]] = []
    in_log: set[str] = set()
    for agg, changes in iter_change_streams(db):
        in_log.add(agg)
        report.aggregates += 1
        report.events += len(changes)
        chunk.append((agg, project(changes), {c["event"] for c in changes}))
        if len(chunk) >= batch:
            _rebuild_chunk(db, chunk, report, check_only)
            chunk = []
    if chunk:
        _rebuild_chunk(db, chunk, report, check_only)
    _remove_unaccounted(db, in_log, report, check_only)
    return report


def _rebuild_chunk(
    db: Database,
    chunk: list[tuple[str, Doc | None, set[str]]],
    report: RebuildReport,
    check_only: bool,
) -> None:
    stored = db.get_many(agg for agg, _, _ in chunk)
    to_write = []
    for agg, rebuilt, folded in chunk:
        current = stored.get(agg)
        if comparable(current) == comparable(rebuilt):
            continue
        if current is not None and current.get("last_event") not in folded:
            _refold_one(db, agg, current, report, check_only)  # newer than this pass
            continue
        report.differing.append(agg)
        if rebuilt is not None and not check_only:
            if current is not None:
                rebuilt["_rev"] = current["_rev"]
            to_write.append(rebuilt)
    for doc, result in zip(to_write, db.bulk_docs(to_write), strict=True):
        if result.ok:
            report.written += 1
        else:  # someone wrote it meanwhile: fold again from the log, and say so
            report.differing.remove(doc["_id"])  # _refold_one says whether it still differs
            _refold_one(db, doc["_id"], None, report, check_only)
            report.conflicts_repaired += 1


def _refold_one(
    db: Database, agg: str, current: Doc | None, report: RebuildReport, check_only: bool
) -> None:
    """Compare (and unless check_only, repair) one projection against the log as it is now."""
    if check_only:
        current = db.get_or_none(agg) if current is None else current
        changes = read_events(db, agg)
        if comparable(current) == comparable(project(changes)):
            return
        if current is not None and not is_settled(current):
            if current.get("last_event") not in {c["event"] for c in changes}:
                report.in_flight.append(agg)
                return
        report.differing.append(agg)
        return
    try:
        before = db.get_or_none(agg)
        if comparable(repair_projection(db, agg)) != comparable(before):
            report.differing.append(agg)
            report.written += 1
    except InFlightError:
        report.in_flight.append(agg)


def _remove_unaccounted(
    db: Database, in_log: set[str], report: RebuildReport, check_only: bool
) -> None:
    """Projections of a projected type that no change in the log accounts for.

    One created after this pass read the log (its event is in the log now)
    is not one of them, and one that may be in flight is left alone.
    """
    for type_name in sorted(projected_types()):
        candidates = [i for i in db.iter_ids(f"{type_name}:") if i not in in_log]
        if not candidates:
            continue
        current = db.get_many(candidates)
        named = {str(d["last_event"]) for d in current.values() if d.get("last_event")}
        rows = event_log(db).all_docs(sorted(named), include_docs=False) if named else []
        recorded = {row["key"] for row in rows if "error" not in row}
        doomed = []
        for doc in current.values():
            if doc.get("last_event") in recorded:
                continue
            if not is_settled(doc):
                report.in_flight.append(doc["_id"])
                continue
            report.without_events.append(doc["_id"])
            doomed.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
        if doomed and not check_only:
            report.deleted += sum(1 for r in db.bulk_docs(doomed) if r.ok)


def strip_bookkeeping(doc: Doc) -> Doc:
    """A projection without the store's own fields: what the domain says about it."""
    return {k: v for k, v in doc.items() if k not in BOOKKEEPING and k != "_rev"}
