"""The event store: immutable events, projections derived from them, optimistic concurrency.

An event is `ev:<aggregate id>:<version, 10 digits>`. Creating it is the only
point of decision: CouchDB lets exactly one writer create a document id, so
two writers that both read version N race for `ev:<id>:N+1` and one loses
with a conflict — no locks. The projection (`<aggregate id>`, with `version`)
is written second; if a crash comes between the two writes, the projector job
(`catch_up_projections`) replays the missing events.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from app.couch import BulkResult, Database, DocumentConflictError
from app.timeutil import iso

Doc = dict[str, Any]
Projector = Callable[[Doc, Doc], None]
# A decision looks at an aggregate's current state (None when it has no events yet)
# and returns the event to record as (name, data), or None to record nothing.
Decision = Callable[[Doc | None], tuple[str, dict[str, Any]] | None]

VERSION_DIGITS = 10
EVENT_PREFIX = "ev:"
CHECKPOINT_ID = "_local/projector-checkpoint"

_PROJECTORS: dict[str, Projector] = {}


class ConcurrencyError(Exception):
    """Another writer kept winning the same aggregate; the caller may retry later."""


def projector(aggregate_type: str) -> Callable[[Projector], Projector]:
    """Register the function that applies one event to a state of this aggregate type.

    The function mutates the state dict in place; it must depend on nothing
    but the state and the event, so that a rebuild gives the same result.
    """

    def register(func: Projector) -> Projector:
        _PROJECTORS[aggregate_type] = func
        return func

    return register


def aggregate_type(aggregate_id: str) -> str:
    return aggregate_id.split(":", 1)[0]


def event_id(aggregate_id: str, version: int) -> str:
    return f"{EVENT_PREFIX}{aggregate_id}:{version:0{VERSION_DIGITS}d}"


def make_event(
    aggregate_id: str, version: int, name: str, data: dict[str, Any], actor: str, at: datetime
) -> Doc:
    return {
        "_id": event_id(aggregate_id, version),
        "type": "event",
        "aggregate": aggregate_id,
        "version": version,
        "name": name,
        "at": iso(at),
        "actor": actor,
        "data": data,
    }


def apply_event(state: Doc | None, event: Doc) -> Doc:
    """Return the projection after one event (the input is not modified)."""
    aggregate_id = event["aggregate"]
    new = (
        copy.deepcopy(state)
        if state
        else {"_id": aggregate_id, "type": aggregate_type(aggregate_id)}
    )
    new.pop("_rev", None)
    _PROJECTORS[aggregate_type(aggregate_id)](new, event)
    new["version"] = event["version"]
    new["updated_at"] = event["at"]
    if state and "_rev" in state:
        new["_rev"] = state["_rev"]
    return new


def project(events: Iterable[Doc]) -> Doc | None:
    """Fold a stream of one aggregate's events, in version order, into its projection."""
    state: Doc | None = None
    for event in events:
        state = apply_event(state, event)
    if state is not None:
        state.pop("_rev", None)
    return state


def _lost_race(result: BulkResult) -> bool:
    """True when the event id already existed: someone else won that version.

    CouchDB answers `conflict`; pouchdb-server runs validate_doc_update first,
    so our own immutability rule answers `forbidden` with reason `event_immutable…`.
    """
    if result.error == "conflict":
        return True
    return result.error == "forbidden" and (result.reason or "").startswith("event_immutable")


@dataclasses.dataclass
class Outcome:
    """What became of one decision in a commit."""

    aggregate: str
    recorded: bool  # an event was written
    state: Doc | None  # the projection after the commit (or as found)
    event: Doc | None = None
    lost_race: bool = False


def commit(
    db: Database,
    decisions: Sequence[tuple[str, Decision]],
    *,
    actor: str,
    now: datetime,
    states: dict[str, Doc] | None = None,
    retry_lost: int = 3,
) -> list[Outcome]:
    """Decide and record one event per aggregate, as two _bulk_docs writes.

    `states` may carry projections the caller already read (a queue's
    include_docs rows); the rest are read here. With retry_lost > 0 an aggregate
    whose event id was taken is repaired from its events and decided again, so
    results are never lost; with 0 a lost race is reported (a lease: "taken").
    """
    known = dict(states or {})
    missing = [agg for agg, _ in decisions if agg not in known]
    known.update(db.get_many(missing))
    outcomes: dict[str, Outcome] = {}
    pending = list(decisions)
    for attempt in range(retry_lost + 1):
        lost = _commit_once(db, pending, known, actor, now, outcomes)
        if not lost:
            break
        if attempt == retry_lost:
            for agg, _ in lost:
                outcomes[agg] = Outcome(agg, False, known.get(agg), lost_race=True)
            break
        for agg, _ in lost:
            known[agg] = repair_projection(db, agg) or {}
        pending = lost
    return [outcomes[agg] for agg, _ in decisions]


def check_none_lost(outcomes: Iterable[Outcome]) -> None:
    """Raise ConcurrencyError when a decision kept losing its race.

    For facts a client is told were accepted (submissions): reporting success
    for an event that was never written would lose it (invariant 3).
    """
    lost = [o.aggregate for o in outcomes if o.lost_race]
    if lost:
        raise ConcurrencyError("other writers kept winning: " + ", ".join(lost))


def _commit_once(
    db: Database,
    decisions: Sequence[tuple[str, Decision]],
    known: dict[str, Doc],
    actor: str,
    now: datetime,
    outcomes: dict[str, Outcome],
) -> list[tuple[str, Decision]]:
    """One round: write events, then projections; return the decisions that lost a race."""
    events: list[Doc] = []
    by_event: dict[str, tuple[str, Decision]] = {}
    for agg, decide in decisions:
        state = known.get(agg) or None
        verdict = decide(state)
        if verdict is None:
            outcomes[agg] = Outcome(agg, False, state)
            continue
        name, data = verdict
        version = (state or {}).get("version", 0) + 1
        event = make_event(agg, version, name, data, actor, now)
        events.append(event)
        by_event[event["_id"]] = (agg, decide)
    lost: list[tuple[str, Decision]] = []
    won: list[Doc] = []
    refused: list[str] = []
    for event, result in zip(events, db.bulk_docs(events), strict=True):
        if result.ok:
            won.append(event)
        elif _lost_race(result):
            lost.append(by_event[event["_id"]])
        else:
            refused.append(f"{event['_id']}: {result.error} {result.reason}")
    projections = [apply_event(known.get(ev["aggregate"]) or None, ev) for ev in won]
    write_projections(db, projections)
    for event, projection in zip(won, projections, strict=True):
        known[event["aggregate"]] = projection
        outcomes[event["aggregate"]] = Outcome(event["aggregate"], True, projection, event)
    if refused:  # raised only now, so that the events that were written are projected
        raise RuntimeError("events refused: " + "; ".join(refused))
    return lost


def write_projections(db: Database, projections: list[Doc]) -> None:
    """Store projections; one that lost to a concurrent writer is repaired from events."""
    for projection, result in zip(projections, db.bulk_docs(projections), strict=True):
        if result.ok:
            projection["_rev"] = result.rev
        elif result.error == "conflict":
            repaired = repair_projection(db, projection["_id"])
            if repaired is not None:
                projection.clear()
                projection.update(repaired)
        else:
            raise RuntimeError(f"projection {projection['_id']} refused: {result.error}")


def read_events(db: Database, aggregate_id: str, after_version: int = 0) -> list[Doc]:
    """Read one aggregate's events in version order (ids sort by version: zero padded)."""
    rows = db.server.request(
        "GET",
        f"{db.path}/_all_docs",
        params={
            "startkey": event_id(aggregate_id, after_version + 1),
            "endkey": f"{EVENT_PREFIX}{aggregate_id}:\ufff0",
            "include_docs": True,
        },
    ).json()["rows"]
    return [row["doc"] for row in rows if row.get("doc")]


def repair_projection(db: Database, aggregate_id: str) -> Doc | None:
    """Bring one projection up to its last event; return the stored projection.

    Idempotent and safe to race: the write is conditional on the _rev read,
    and a loser simply reads again.
    """
    for _ in range(5):
        stored = db.get_or_none(aggregate_id)
        version = (stored or {}).get("version", 0)
        newer = read_events(db, aggregate_id, after_version=version)
        if not newer:
            return stored
        state = stored
        for event in newer:
            state = apply_event(state, event)
        assert state is not None
        try:
            db.put(state)
        except DocumentConflictError:
            continue
        return state
    raise ConcurrencyError(f"could not repair {aggregate_id}: it keeps changing")


def iter_event_streams(db: Database, page_size: int = 2000) -> Iterator[tuple[str, list[Doc]]]:
    """Yield (aggregate id, its events in order) for every aggregate, paging _all_docs.

    Events of one aggregate share the id prefix `ev:<aggregate>:`, so they are
    contiguous in _all_docs order.
    """
    current: str | None = None
    stream: list[Doc] = []
    for event in db.iter_prefix(EVENT_PREFIX, page_size=page_size):
        if event["aggregate"] != current:
            if current is not None:
                yield current, stream
            current, stream = event["aggregate"], []
        stream.append(event)
    if current is not None:
        yield current, stream


def _comparable(doc: Doc | None) -> Doc | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != "_rev"}


@dataclasses.dataclass
class RebuildReport:
    aggregates: int = 0
    events: int = 0
    differing: list[str] = dataclasses.field(default_factory=list)
    written: int = 0


def rebuild_projections(
    db: Database, *, check_only: bool = False, batch: int = 500
) -> RebuildReport:
    """Recompute every projection from events alone; write (or with check_only list) differences."""
    report = RebuildReport()
    chunk: list[tuple[str, Doc | None]] = []

    def flush() -> None:
        stored = db.get_many(agg for agg, _ in chunk)
        to_write = []
        for agg, rebuilt in chunk:
            current = stored.get(agg)
            if _comparable(current) == _comparable(rebuilt):
                continue
            report.differing.append(agg)
            if rebuilt is not None and not check_only:
                if current is not None:
                    rebuilt["_rev"] = current["_rev"]
                to_write.append(rebuilt)
        if to_write:
            results = db.bulk_docs(to_write)
            report.written += sum(1 for r in results if r.ok)
        chunk.clear()

    for agg, events in iter_event_streams(db):
        report.aggregates += 1
        report.events += len(events)
        chunk.append((agg, project(events)))
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    return report


def catch_up_projections(db: Database, *, limit: int = 1000, max_rounds: int = 100) -> int:
    """Follow _changes of events from a checkpoint and repair lagging projections.

    Returns how many projections were repaired. The checkpoint is a _local
    document: it never replicates, since each site projects its own copy.
    """
    checkpoint = db.get_or_none(CHECKPOINT_ID) or {"_id": CHECKPOINT_ID, "seq": 0}
    repaired = 0
    for _ in range(max_rounds):
        feed = db.changes(
            since=checkpoint["seq"], limit=limit, filter="events/events", include_docs=True
        )
        latest: dict[str, int] = {}
        for change in feed["results"]:
            doc = change.get("doc") or {}
            if doc.get("type") == "event":
                agg = doc["aggregate"]
                latest[agg] = max(latest.get(agg, 0), doc["version"])
        stored = db.get_many(latest)
        for agg, version in latest.items():
            if stored.get(agg, {}).get("version", 0) < version:
                repair_projection(db, agg)
                repaired += 1
        checkpoint["seq"] = feed["last_seq"]
        try:
            db.put(checkpoint)
        except DocumentConflictError:
            checkpoint = db.get(CHECKPOINT_ID)  # another projector moved on; follow it
        if len(feed["results"]) < limit:
            break
    return repaired
