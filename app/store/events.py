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
rebuild sorts by (version, event id): a deterministic order for any log.

Sites. Two sites that change one aggregate while apart both write its next
version; when their logs meet, every site folds both changes of that version
in event id order (the time, then the site), and the second is *concurrent*:
it was decided without knowing the first. apply_event tells the projector so
(`change["concurrent"]`), and each projector decides what the pair means for
its domain (an album leased at two sites keeps both holders, an album
imported twice is added once, the first result fills an album and a later
one adds its torrents). A projector must give the same state for the same
sorted changes, so every site converges.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from app.store.couch import Database
from app.timeutil import iso, utcnow

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Projector = Callable[[Doc, Doc], None]
# A decision looks at an aggregate's current state (None when it has no events yet)
# and returns the change to record as (name, data), or None to record nothing.
Decision = Callable[[Doc | None], tuple[str, dict[str, Any]] | None]

EVENT_PREFIX = "ev:"
LOG_DDOC = "log"  # the event log's design document: validator, by_aggregate, filters
# Bookkeeping every projection carries besides its domain fields.
BOOKKEEPING = ("version", "updated_at", "last_event", "written_at")
# How long a projection whose event is not in the log may be a commit still in
# flight (between its projection write and its event append) rather than a
# phantom of a crashed one. Longer than any request may take (a request times
# out after couchdb.timeout_seconds, 30 s by default, and may be retried).
GRACE_SECONDS = 120.0

_PROJECTORS: dict[str, Projector] = {}


class ConcurrencyError(Exception):
    """Another writer kept winning the same aggregate; the caller may retry later."""


class EventRefusedError(Exception):
    """The event log refused an event (a bug, or a validator out of date)."""


class EventExistsError(EventRefusedError):
    """The event's id is in the log already: an earlier send of it was written."""


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


def fold_key(change: Doc) -> tuple[int, str]:
    """The order in which one aggregate's changes are folded, for any log: by version,
    then by event id (its time, then its site), so of two sites' changes of one
    version the earlier one comes first."""
    return (change["version"], change.get("event", ""))


def apply_event(state: Doc | None, change: Doc) -> Doc:
    """Return the projection after one change (the input is not modified).

    A change whose version the state has reached already was written at
    another site without knowing the change before it: the projector sees
    `concurrent: True` and decides what the two mean together.
    """
    aggregate_id = change["aggregate"]
    new = _copy(state) if state else {"_id": aggregate_id, "type": aggregate_type(aggregate_id)}
    new.pop("_rev", None)
    if state and change["version"] <= state.get("version", 0):
        change = {**change, "concurrent": True}
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


def unbacked(db: Database, states: dict[str, Doc]) -> set[str]:
    """The aggregates whose projection names an event the log does not have (phantoms,
    or commits still in flight). One keyed read of the log."""
    named = {agg: doc["last_event"] for agg, doc in states.items() if doc and doc.get("last_event")}
    if not named:
        return set()
    rows = event_log(db).all_docs(sorted(set(named.values())), include_docs=False)
    present = {row["key"] for row in rows if "error" not in row}
    return {agg for agg, event_id in named.items() if event_id not in present}


def is_settled(doc: Doc, grace_seconds: float | None = None) -> bool:
    """True when a projection was written longer than the grace ago (wall clock)."""
    written = doc.get("written_at")
    if not written:
        return True
    grace = GRACE_SECONDS if grace_seconds is None else grace_seconds
    return written <= iso(utcnow() - timedelta(seconds=grace))


def append_event(db: Database, event: Doc) -> None:
    """Write one event to the log; name it after its changes when the caller did not."""
    if not event["name"]:
        names = sorted({change["name"] for change in event["changes"]})
        event["name"] = names[0] if len(names) == 1 else "+".join(names)
    [result] = event_log(db).bulk_docs([event])
    if result.ok:
        return
    reason = f"event {event['_id']} refused: {result.error} {result.reason}"
    # CouchDB answers an existing id with a conflict; pouchdb-server runs the
    # log's validator first, which refuses it with reason "event_immutable…".
    if result.error == "conflict" or (result.reason or "").startswith("event_immutable"):
        raise EventExistsError(reason)
    raise EventRefusedError(reason)


def read_events(db: Database, aggregate_id: str, after_version: int = 0) -> list[Doc]:
    """One aggregate's changes in fold order, from the log's by_aggregate view (read fresh)."""
    rows = event_log(db).view(
        LOG_DDOC,
        "by_aggregate",
        startkey=[aggregate_id, after_version + 1],
        endkey=[aggregate_id, {}],
    )
    # Apache CouchDB collates keys with ICU, where two canonically equivalent
    # strings compare equal: keep only this exact aggregate's rows.
    return [change_from_row(row) for row in rows if row["key"][0] == aggregate_id]


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
