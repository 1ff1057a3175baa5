"""The event store: one immutable event per command, projections derived from its changes.

Two databases (README "Architecture"):
- the event log (`db.companion("events")`): immutable event documents, the
  facts, guarded by the only validate_doc_update there is; the one database
  that replicates between sites;
- the read model (`db`): one projection per aggregate, no validator, local to
  this site, rebuilt from the log at any time (app/store/projections.py).

An event records one command over one or many aggregates:
    {_id: "ev:<UTC time>:<site>:<16 hex>", type: "event", name, at, actor, site,
     changes: [{aggregate, version, name, data}, ...]}
so an import batch of 1,000 rows or a lease of 100 albums pays the validator
once, not once per album.

The point of decision is the read model: a projection is written with the
`_rev` it was decided on (a new one without `_rev`), so of two writers that
decided on the same state exactly one wins and the other gets a conflict
(CouchDB's single-node guarantee; no locks). The event with the winners'
changes is appended to the log next, and only then does the caller answer.
A crash between the two writes leaves projections that name an event the log
does not have ("phantoms"); the client never heard "ok", and the projector
rolls them back from the log after a grace period. Each change carries the
aggregate's next version, so one site's changes fold in version order, and a
rebuild sorts by (version, site, event id): a deterministic order for any log.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from app.store.couch import Database
from app.timeutil import iso

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Projector = Callable[[Doc, Doc], None]
# A decision looks at an aggregate's current state (None when it has no events yet)
# and returns the change to record as (name, data), or None to record nothing.
Decision = Callable[[Doc | None], tuple[str, dict[str, Any]] | None]

EVENT_PREFIX = "ev:"
LOG_DDOC = "log"  # the event log's design document: validator, by_aggregate, filters
# Bookkeeping every projection carries besides its domain fields.
BOOKKEEPING = ("version", "updated_at", "last_event")

_PROJECTORS: dict[str, Projector] = {}


class ConcurrencyError(Exception):
    """Another writer kept winning the same aggregate; the caller may retry later."""


class EventRefusedError(Exception):
    """The event log refused an event (a bug, or a validator out of date)."""


def register_projector(aggregate_type: str, func: Projector) -> None:
    """Register the function that applies one change to a state of this aggregate type.

    The function mutates the state dict in place; it must depend on nothing
    but the state and the change, so that a rebuild gives the same result.
    app/projectors.py registers every context's projector (register_projectors).
    """
    _PROJECTORS[aggregate_type] = func


def _projector_for(aggregate_type: str) -> Projector:
    try:
        return _PROJECTORS[aggregate_type]
    except KeyError:
        raise LookupError(
            f"no projector for {aggregate_type!r}: call app.projectors.register_projectors() "
            "when the process starts"
        ) from None


def projected_types() -> frozenset[str]:
    """The aggregate types that have a projector: their documents are projections."""
    if not _PROJECTORS:  # a process that forgot to register would rebuild nothing
        raise LookupError("no projectors: call app.projectors.register_projectors() first")
    return frozenset(_PROJECTORS)


def aggregate_type(aggregate_id: str) -> str:
    return aggregate_id.split(":", 1)[0]


def event_log(db: Database) -> Database:
    """The event log that belongs to this read model."""
    return db.companion("events")


def default_site_name() -> str:
    """The host name, reduced to what an event id may hold."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "site"
    return name[:63]


def site_of(db: Database) -> str:
    return db.site or default_site_name()


def new_event_id(at: datetime, site: str) -> str:
    """A unique id that sorts by time: `ev:<YYYYMMDDTHHMMSS.ffffffZ>:<site>:<16 hex>`.

    It never contains an aggregate id, so keys holding ":" or any character
    cannot make one aggregate's events look like another's; the random part
    keeps ids distinct across processes and sites without coordination.
    """
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{EVENT_PREFIX}{stamp}:{site}:{secrets.token_hex(8)}"


def changes_of(event: Doc) -> list[Doc]:
    """The per-aggregate changes of one event document, in the shape projectors read."""
    return [
        {
            "aggregate": change["aggregate"],
            "version": change["version"],
            "name": change["name"],
            "data": change["data"],
            "at": event["at"],
            "actor": event["actor"],
            "site": event.get("site", ""),
            "event": event["_id"],
        }
        for change in event["changes"]
    ]


def fold_key(change: Doc) -> tuple[int, str, str]:
    """The order in which one aggregate's changes are folded, for any log."""
    return (change["version"], change.get("site", ""), change.get("event", ""))


def apply_event(state: Doc | None, change: Doc) -> Doc:
    """Return the projection after one change (the input is not modified)."""
    aggregate_id = change["aggregate"]
    new = _copy(state) if state else {"_id": aggregate_id, "type": aggregate_type(aggregate_id)}
    new.pop("_rev", None)
    _projector_for(aggregate_type(aggregate_id))(new, change)
    new["version"] = max(new.get("version", 0), change["version"])
    new["updated_at"] = change["at"]
    new["last_event"] = change.get("event")
    if state and "_rev" in state:
        new["_rev"] = state["_rev"]
    return new


def _copy(doc: Doc) -> Doc:
    # Projections are JSON: a JSON-shaped copy is several times faster than deepcopy.
    import json

    copied: Doc = json.loads(json.dumps(doc))
    return copied


def project(changes: Iterable[Doc]) -> Doc | None:
    """Fold one aggregate's changes (any order: they are sorted) into its projection."""
    state: Doc | None = None
    for change in sorted(changes, key=fold_key):
        state = apply_event(state, change)
    if state is not None:
        state.pop("_rev", None)
    return state


@dataclasses.dataclass
class Outcome:
    """What became of one decision in a commit."""

    aggregate: str
    recorded: bool  # a change was recorded
    state: Doc | None  # the projection after the commit (or as found)
    event: Doc | None = None  # the change (with its event's id, time and actor)
    lost_race: bool = False


def commit(
    db: Database,
    decisions: Sequence[tuple[str, Decision]],
    *,
    actor: str,
    now: datetime,
    states: dict[str, Doc] | None = None,
    retry_lost: int = 3,
    command: str | None = None,
) -> list[Outcome]:
    """Decide per aggregate, claim the projections, then append one event for all of them.

    `states` may carry projections the caller already read (a queue's
    include_docs rows; `{}` for "known to be absent"); the rest are read here.
    With retry_lost > 0 an aggregate whose projection changed under us is read
    again and decided again, so results are never lost; with 0 a lost race is
    reported (a lease: "taken, try the next"). Raises EventRefusedError if the
    log refuses the event, and CouchError if it cannot be reached: either way
    the caller must not answer "ok" (the projections are rolled back later).
    """
    known = dict(states or {})
    missing = [agg for agg, _ in decisions if agg not in known]
    known.update(db.get_many(missing))
    before = dict(known)  # what a failed append puts back
    site = site_of(db)
    event: Doc = {
        "_id": new_event_id(now, site),
        "type": "event",
        "name": command or "",
        "at": iso(now),
        "actor": actor,
        "site": site,
        "changes": [],
    }
    outcomes: dict[str, Outcome] = {}
    pending = list(decisions)
    for attempt in range(retry_lost + 1):
        lost = _claim(db, pending, known, event, outcomes)
        if not lost:
            break
        if attempt == retry_lost:
            for agg, _ in lost:
                outcomes[agg] = Outcome(agg, False, known.get(agg) or None, lost_race=True)
            break
        fresh = db.get_many(agg for agg, _ in lost)
        for agg, _ in lost:
            known[agg] = fresh.get(agg) or {}
        pending = lost
    if event["changes"]:
        try:
            append_event(db, event)
        except Exception:
            _undo_claims(db, event, before, known)
            raise
    return [outcomes[agg] for agg, _ in decisions]


def _undo_claims(db: Database, event: Doc, before: dict[str, Doc], known: dict[str, Doc]) -> None:
    """Put back the projections of a command whose event did not reach the log.

    Best effort: a retry of the command must not find its own unrecorded
    changes and take them as done. What cannot be put back now (the process
    dies, the read model is unreachable) is rolled back by the projector after
    its grace period.
    """
    undo = []
    for change in event["changes"]:
        agg = change["aggregate"]
        previous = before.get(agg) or None
        current_rev = known[agg]["_rev"]
        if previous is None:
            undo.append({"_id": agg, "_rev": current_rev, "_deleted": True})
        else:
            undo.append(dict(previous, _rev=current_rev))
    try:
        db.bulk_docs(undo)
    except Exception:  # the projector's phantom repair is the backstop
        log.warning("could not undo %d projections of %s", len(undo), event["_id"])


def _claim(
    db: Database,
    decisions: Sequence[tuple[str, Decision]],
    known: dict[str, Doc],
    event: Doc,
    outcomes: dict[str, Outcome],
) -> list[tuple[str, Decision]]:
    """One round: decide, write the projections conditionally; return the decisions that lost."""
    claimed: list[tuple[tuple[str, Decision], Doc, Doc]] = []
    for agg, decide in decisions:
        state = known.get(agg) or None
        verdict = decide(state)
        if verdict is None:
            outcomes[agg] = Outcome(agg, False, state)
            continue
        name, data = verdict
        change = {"aggregate": agg, "version": (state or {}).get("version", 0) + 1}
        change.update(name=name, data=data)
        view = dict(change, at=event["at"], actor=event["actor"], site=event["site"])
        view["event"] = event["_id"]
        claimed.append(((agg, decide), change, apply_event(state, view)))
    lost: list[tuple[str, Decision]] = []
    results = db.bulk_docs([projection for _, _, projection in claimed])
    for (decision, change, projection), result in zip(claimed, results, strict=True):
        agg = decision[0]
        if result.ok:
            projection["_rev"] = result.rev
            known[agg] = projection
            event["changes"].append(change)
            view = changes_of(dict(event, changes=[change]))[0]
            outcomes[agg] = Outcome(agg, True, projection, view)
        elif result.error == "conflict":
            lost.append(decision)
        else:
            raise RuntimeError(f"projection {agg} refused: {result.error} {result.reason}")
    return lost


def append_event(db: Database, event: Doc) -> None:
    """Write one event to the log; name it after its changes when the caller did not."""
    if not event["name"]:
        names = sorted({change["name"] for change in event["changes"]})
        event["name"] = names[0] if len(names) == 1 else "+".join(names)
    [result] = event_log(db).bulk_docs([event])
    if not result.ok:
        raise EventRefusedError(f"event {event['_id']} refused: {result.error} {result.reason}")


def check_none_lost(outcomes: Iterable[Outcome]) -> None:
    """Raise ConcurrencyError when a decision kept losing its race.

    For facts a client is told were accepted (submissions): reporting success
    for a change that was never recorded would lose it (invariant 3).
    """
    lost = [o.aggregate for o in outcomes if o.lost_race]
    if lost:
        raise ConcurrencyError("other writers kept winning: " + ", ".join(lost))


def read_events(db: Database, aggregate_id: str, after_version: int = 0) -> list[Doc]:
    """One aggregate's changes in fold order, from the log's by_aggregate view (read fresh)."""
    rows = event_log(db).view(
        LOG_DDOC,
        "by_aggregate",
        startkey=[aggregate_id, after_version + 1],
        endkey=[aggregate_id, {}],
    )
    return [change_from_row(row) for row in rows]


def change_from_row(row: Doc) -> Doc:
    """Turn a by_aggregate row (key [aggregate, version, site, event], value [name, data,
    at, actor]) into a change as projectors read it."""
    aggregate, version, site, event_id = row["key"]
    name, data, at, actor = row["value"]
    return {
        "aggregate": aggregate,
        "version": version,
        "name": name,
        "data": data,
        "at": at,
        "actor": actor,
        "site": site,
        "event": event_id,
    }
