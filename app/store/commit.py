"""The write path: decide per aggregate, claim the projections, append one event.

See app/store/events.py for the model (one event per command, projections as
the point of decision) and README "Architecture" for what a crash leaves at
each step. The projector side (repairing projections from the log) is
app/store/projections.py; this module builds on both.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from app.store import events
from app.store.couch import Database
from app.store.events import (
    ConcurrencyError,
    Decision,
    Doc,
    EventExistsError,
    EventRefusedError,
    apply_event,
    changes_of,
    is_settled,
    new_event_id,
    site_of,
    unbacked,
)
from app.store.projections import repair_projection
from app.timeutil import iso, utcnow

log = logging.getLogger(__name__)


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
    trust_states: bool = False,
) -> list[Outcome]:
    """Decide per aggregate, claim the projections, then append one event for all of them.

    `states` may carry projections the caller already read (a queue's
    include_docs rows; `{}` for "known to be absent"); the rest are read here.
    With retry_lost > 0 an aggregate whose projection changed under us is read
    again and decided again, so results are never lost; with 0 a lost race is
    reported (a lease: "taken, try the next"). States are confirmed against
    the log first (confirm_states) unless `trust_states`: a lease only ever
    decides on ready states, which no phantom has, so it skips that read.
    Raises EventRefusedError if the log refuses the event, and CouchError if
    it cannot be reached: either way the caller must not answer "ok". The
    projections are put back at once when the event is certainly not in the
    log, else the projector decides from the log after the grace period.
    """
    known = dict(states or {})
    missing = [agg for agg, _ in decisions if agg not in known]
    known.update(db.get_many(missing))
    in_flight: set[str] = set()
    if not trust_states:  # only what is decided on; a state in flight elsewhere loses its race
        known, in_flight = _confirmed(db, known, {agg for agg, _ in decisions})
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
    outcomes = {agg: Outcome(agg, False, known.get(agg), lost_race=True) for agg in in_flight}
    pending = [(agg, decide) for agg, decide in decisions if agg not in in_flight]
    claimed_at = time.monotonic()
    for attempt in range(retry_lost + 1):
        lost = _claim(db, pending, known, event, outcomes)
        if not lost:
            break
        if attempt == retry_lost:
            for agg, _ in lost:
                outcomes[agg] = Outcome(agg, False, known.get(agg) or None, lost_race=True)
            break
        fresh = db.get_many(agg for agg, _ in lost)
        if not trust_states:
            fresh, _ = _confirmed(db, fresh, set(fresh), wait=False)
        for agg, _ in lost:
            known[agg] = before[agg] = fresh.get(agg) or {}
        pending = lost
    if event["changes"]:
        _append_or_undo(db, event, before, known, claimed_at)
    return [outcomes[agg] for agg, _ in decisions]


def _append_or_undo(
    db: Database, event: Doc, before: dict[str, Doc], known: dict[str, Doc], claimed_at: float
) -> None:
    """Append the event; put the projections back only when it is certainly not in the log.

    A claim older than half the grace period is not appended: the projector
    may take it for a phantom any moment, and roll it back under a caller
    who was told "ok" (a process that paused for minutes). A failed send is
    sent again under the same id: "exists" then means the first one landed.
    When even that cannot be told, nothing is undone: the projector decides
    from the log after the grace period.
    """
    if time.monotonic() - claimed_at > events.GRACE_SECONDS / 2:
        _undo_claims(db, event, before, known)
        raise ConcurrencyError("this command took too long to be recorded; try again")
    for attempt in range(3):
        try:
            events.append_event(db, event)  # looked up at call time: tests stand in for it
            return
        except EventExistsError:
            if attempt:
                return  # an earlier send of this very event was written
            raise  # the first send: a random id that exists is a bug, not a retry
        except EventRefusedError:
            _undo_claims(db, event, before, known)
            raise
        except Exception:
            if attempt == 2:
                log.warning(
                    "cannot tell whether %s reached the log; the projector will", event["_id"]
                )
                raise
            time.sleep(0.1 * 2**attempt)


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


def confirm_states(db: Database, states: dict[str, Doc]) -> dict[str, Doc]:
    """States backed by the log (see _confirmed); ConcurrencyError if one is in flight."""
    confirmed, in_flight = _confirmed(db, states, set(states))
    if in_flight:
        raise ConcurrencyError(f"an earlier change to {min(in_flight)} is still being recorded")
    return confirmed


def _confirmed(
    db: Database, states: dict[str, Doc], wanted: set[str], *, wait: bool = True
) -> tuple[dict[str, Doc], set[str]]:
    """Make sure every state read is backed by the log before deciding on it.

    A projection whose `last_event` is missing from the log is a phantom of a
    command that died before its event (or one still in flight). Deciding on
    it would build on a fact that may never exist: an import re-run would
    call its albums "already present" and the rollback would then lose them.
    An old phantom is rolled back here first; a young one may still be in
    flight: after a short wait (`wait`) it is returned among the aggregates
    in flight, for the caller to treat as a lost race. Only the states of
    `wanted` aggregates are checked.
    """
    suspects = unbacked(db, {agg: states[agg] for agg in wanted if agg in states})
    for attempt in range(3 if wait else 0):
        if not suspects:
            break
        time.sleep(0.02 * 2**attempt)  # a commit in flight appends within milliseconds
        suspects = unbacked(db, {agg: states[agg] for agg in suspects})
    confirmed, in_flight = dict(states), set()
    for agg in sorted(suspects):
        if not is_settled(states[agg]):
            in_flight.add(agg)
        else:
            confirmed[agg] = repair_projection(db, agg) or {}
    return confirmed, in_flight


def _claim(
    db: Database,
    decisions: Sequence[tuple[str, Decision]],
    known: dict[str, Doc],
    event: Doc,
    outcomes: dict[str, Outcome],
) -> list[tuple[str, Decision]]:
    """One round: decide, write the projections conditionally; return the decisions that lost."""
    claimed: list[tuple[tuple[str, Decision], Doc, Doc, Doc]] = []
    written_at = iso(utcnow())  # the wall clock, not the command's time: phantoms age by it
    for agg, decide in decisions:
        state = known.get(agg) or None
        verdict = decide(state)
        if verdict is None:
            outcomes[agg] = Outcome(agg, False, state)
            continue
        name, data = verdict
        change = {"aggregate": agg, "version": (state or {}).get("version", 0) + 1}
        change.update(name=name, data=data)
        [view] = changes_of(dict(event, changes=[change]))  # the change as projectors read it
        projection = apply_event(state, view)
        projection["written_at"] = written_at
        claimed.append(((agg, decide), change, view, projection))
    lost: list[tuple[str, Decision]] = []
    results = db.bulk_docs([projection for *_, projection in claimed])
    for (decision, change, view, projection), result in zip(claimed, results, strict=True):
        agg = decision[0]
        if result.ok:
            projection["_rev"] = result.rev
            known[agg] = projection
            event["changes"].append(change)
            outcomes[agg] = Outcome(agg, True, projection, view)
        elif result.error == "conflict":
            lost.append(decision)
        else:
            raise RuntimeError(f"projection {agg} refused: {result.error} {result.reason}")
    return lost


def always(name: str, data: dict[str, Any]) -> Decision:
    """A decision that records this change on any aggregate that exists (a fact to keep
    whatever the state, such as a worker's result)."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return (name, data) if state is not None else None

    return decide


def check_none_lost(outcomes: Iterable[Outcome]) -> None:
    """Raise ConcurrencyError when a decision kept losing its race.

    For facts a client is told were accepted (submissions): reporting success
    for a change that was never recorded would lose it (invariant 3).
    """
    lost = [o.aggregate for o in outcomes if o.lost_race]
    if lost:
        raise ConcurrencyError("other writers kept winning: " + ", ".join(lost))
