"""The projector's first half: follow the event log and bring projections up to it.

`catch_up_projections` reads the log's `_changes` from a checkpoint (a
`_local` document of the read model, which never replicates) and brings up
to date every aggregate a change touches whose projection has not reached
that change's version: an event of another site (always: their versions say
nothing about ours), or one whose projection write was lost. Changes that
simply continue a projection are applied to it and written in bulk; the
rest is refolded from the log (app/store/projections.py `repair_projection`).
The other half, rolling back phantoms, is `repair_phantoms` there.
"""

from __future__ import annotations

import logging
from typing import Any

from app.store.couch import Database, DocumentConflictError
from app.store.events import Doc, apply_event, changes_of, event_log, fold_key, is_settled, site_of
from app.store.projections import InFlightError, comparable, repair_projection

log = logging.getLogger(__name__)

LOG_CHECKPOINT_ID = "_local/projector-checkpoint"


def catch_up_projections(db: Database, *, limit: int = 500, max_rounds: int = 100) -> int:
    """Follow the log's _changes from a checkpoint; refold projections that miss a change.

    Returns how many projections were repaired. Pages of the feed are read
    until about BATCH_CHANGES changes have arrived, so that an aggregate
    changed by many events (imported, leased, found) is written once. An
    aggregate with a commit in flight is not touched: it is kept in the
    checkpoint (`deferred`) and tried again at the start of the next run,
    while the run goes on with the rest.
    """
    checkpoint = db.get_or_none(LOG_CHECKPOINT_ID) or {"_id": LOG_CHECKPOINT_ID, "seq": 0}
    deferred: set[str] = set()
    repaired = _retry_deferred(db, checkpoint.get("deferred") or [], deferred)
    for _ in range(max_rounds):
        arrived, foreign, last_seq, done = _read_arrivals(db, checkpoint["seq"], limit)
        stored = _stored(db, arrived, foreign)
        behind = [
            agg
            for agg, changes in arrived.items()
            if agg in foreign
            or stored.get(agg, {}).get("version", 0) < max(c["version"] for c in changes)
        ]
        slow = _fast_forward(db, behind, stored, arrived)
        repaired += len(behind) - len(slow)
        for agg in slow:
            repaired += _repair_or_defer(db, agg, db.get_or_none(agg), deferred)
        checkpoint["seq"] = last_seq
        checkpoint["deferred"] = sorted(deferred)
        try:
            db.put(checkpoint)
        except DocumentConflictError:
            checkpoint = db.get(LOG_CHECKPOINT_ID)  # another projector moved on; follow it
        if done:
            break
    return repaired


BATCH_CHANGES = 10_000  # changes gathered from the feed before projections are written


def _read_arrivals(
    db: Database, since: Any, limit: int
) -> tuple[dict[str, list[Doc]], set[str], Any, bool]:
    """Changes per aggregate from the log's feed after `since`, page by page until
    BATCH_CHANGES; the aggregates another site touched; the last seq; whether the
    feed was read to its end."""
    events, own_site = event_log(db), site_of(db)
    arrived: dict[str, list[Doc]] = {}
    foreign: set[str] = set()
    count = 0
    while True:
        feed = events.changes(since=since, limit=limit, include_docs=True)
        for row in feed["results"]:
            doc = row.get("doc") or {}
            if doc.get("type") != "event":
                continue
            for change in changes_of(doc):
                arrived.setdefault(change["aggregate"], []).append(change)
                if change["site"] != own_site:
                    foreign.add(change["aggregate"])
                count += 1
        since = feed["last_seq"]
        if len(feed["results"]) < limit:
            return arrived, foreign, since, True
        if count >= BATCH_CHANGES:
            return arrived, foreign, since, False


def _stored(db: Database, arrived: dict[str, list[Doc]], foreign: set[str]) -> dict[str, Doc]:
    """The stored projections of the arrived aggregates, except those another site
    created: they are written as new documents, and one that exists here after all
    (created at both sites) conflicts and is refolded."""
    own_site = site_of(db)
    ids = [
        agg
        for agg, changes in arrived.items()
        if agg not in foreign
        or not any(c["version"] == 1 for c in changes)
        or any(c["version"] == 1 and c["site"] == own_site for c in changes)
    ]
    stored: dict[str, Doc] = {}
    for start in range(0, len(ids), 1000):
        stored |= db.get_many(ids[start : start + 1000])
    return stored


def _fast_forward(
    db: Database, aggregates: list[str], stored: dict[str, Doc], arrived: dict[str, list[Doc]]
) -> list[str]:
    """Apply arrived changes that simply continue a projection, in one bulk write;
    return the aggregates that need a full refold from the log.

    A projection continues when its changes here are exactly its next versions
    (the usual case for events of another site: nothing concurrent). Anything
    else (a change at or below the stored version, which may be concurrent and
    fold before it; a gap; a projection written moments ago, whose commit may
    be in flight) is refolded from the log by repair_projection.
    """
    writes: list[Doc] = []
    slow: list[str] = []
    for agg in aggregates:
        state = stored.get(agg)
        changes = sorted(arrived[agg], key=fold_key)
        base = state.get("version", 0) if state else 0
        if [c["version"] for c in changes] != list(range(base + 1, base + 1 + len(changes))) or (
            state is not None and not is_settled(state)
        ):
            slow.append(agg)
            continue
        for change in changes:
            state = apply_event(state, change)
        assert state is not None
        writes.append(state)
    for result in db.bulk_docs(writes):
        if not result.ok:  # written meanwhile (a local commit): refold it
            slow.append(result.id)
    return slow


def _repair_or_defer(db: Database, agg: str, before: Doc | None, deferred: set[str]) -> int:
    """Repair one projection; 1 if it changed. One with a commit in flight is deferred."""
    try:
        after = repair_projection(db, agg)
    except InFlightError:
        log.info("projector: %s has a commit in flight; it is tried again next run", agg)
        deferred.add(agg)
        return 0
    return int(comparable(after) != comparable(before))


def _retry_deferred(db: Database, aggregates: list[str], deferred: set[str]) -> int:
    stored = db.get_many(aggregates) if aggregates else {}
    return sum(_repair_or_defer(db, agg, stored.get(agg), deferred) for agg in aggregates)
