"""Sync orders: leased work on the shared queue life cycle, one aggregate per source.

`syncorder:<source id>` is queued, leased, expired and released exactly as a
URL task is (app/queues/holders.py: `leased`, `lease_expired`, `released`;
app/queues/leasing.py hands it out from the `queues/ready` view and its
reaper returns it, since the projection carries `queue`, `state` and `lease`
like every queued aggregate). Each order is a *round* of that aggregate, and
its public id is `<source id>.<round>`: one aggregate per source makes "at
most one open order per source" a decision on one projection (a second
order while one is ready or leased records nothing: "already_queued"),
with no lock and no view read.

Events (besides the shared lease events):
- `queued` {source_id, order, round, by: "admin"|"schedule"}: a new round.
- `synchronised` {source_id, order, round, counts: {downloaded, skipped,
  missing_remotely, deleted}}: the worker's gallery-dl run ended well.
  The AMQP publisher maps it to GL_SOURCE_SYNCHRONIZED {"source_id"}.
- `failed` {source_id, order, round, reason, attempt, retry_at} or
  {…, attempt, final: true}: back in the queue after a growing delay
  (app/queues/archive.retry_delay) until `sources.max_attempts`.
- `cancelled` {source_id, order, round, reason}: the source was disabled
  while the order waited, or its order was leased after the source was
  disabled (app/sources/dispatch.py; a leased order runs to its end).
- `dispatched` {source_id, order, round, holder, content_path}: what a
  worker that leased the round was told (app/sources/dispatch.py); its files'
  `location` uses this content path, not the source's current one.
- `lease_renewed` {holder, expires_at}: shared (app/queues/holders.py).
A result that must not move the order (`ignored`: "stale", from a worker
that never leased this round; "superseded", a failure while another worker
holds it; "settled", a different result after the round ended: cancelled,
synchronised or failed for good) is still recorded with its data
(invariant 3), as in archive.py. Only an exact repeat of the outcome the
round ended with (a retried request) records nothing.

The projection keeps, for the current round and the HISTORY before it, who
held it and which content path each was told (`holders`, `content_paths`,
`past_rounds`): file reports are taken only from a round's holders.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from app.errors import OrderNotFoundError, SourceDisabledError, SourceNotFoundError
from app.queues.archive import retry_delay
from app.queues.holders import LEASED, READY, apply_lease_event, without_holders
from app.sources import aggregate
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso

TYPE = "syncorder"
QUEUE = "sources"
SYNCHRONISED, FAILED, CANCELLED = "synchronised", "failed", "cancelled"
STATES = (READY, LEASED, SYNCHRONISED, FAILED, CANCELLED)
OPEN = (READY, LEASED)
COUNT_KEYS = ("downloaded", "skipped", "missing_remotely", "deleted")
HISTORY = 10  # finished rounds kept in the projection (the log keeps them all)


def order_doc_id(source_id: str) -> str:
    """The aggregate of a source's sync orders: `syncorder:<source id>`."""
    return f"{TYPE}:{source_id}"


def order_id(source_id: str, round_number: int) -> str:
    """The public id of one order: `<source id>.<round>` (source ids hold no '.')."""
    return f"{source_id}.{round_number}"


def parse_order_id(raw: Any, source_id: str) -> int:
    """The round an order id of this source names; OrderNotFoundError otherwise."""
    text = raw if isinstance(raw, str) else ""
    prefix, _, number = text.rpartition(".")
    if prefix != source_id or not number.isascii() or not number.isdigit() or len(number) > 9:
        raise OrderNotFoundError(f"{raw!r} is not an order of source {source_id!r}.", order=raw)
    return int(number)


# ---------------------------------------------------------------- projection


def apply_order_event(state: Doc, event: Doc) -> None:
    """Project one sync order event (see the module docstring)."""
    if apply_lease_event(state, event):
        if event["name"] == "leased" and event["data"]["holder"] not in state["holders"]:
            state["holders"].append(event["data"]["holder"])
        return
    name, data = event["name"], event["data"]
    if data.get("ignored"):
        state["ignored_results"] = state.get("ignored_results", 0) + 1
    elif name == "dispatched":
        _note_dispatch(state, data)
    elif name == "queued" and not (event.get("concurrent") and state.get("state") in OPEN):
        _start_round(state, event)  # queued at two sites while apart: one round
    elif name == "synchronised" and state.get("state") in OPEN:
        _finish(state, event, SYNCHRONISED, counts=data["counts"])
    elif name == "failed" and state.get("state") in OPEN:
        state.update(attempts=data["attempt"], last_reason=data["reason"])
        if data.get("final"):
            _finish(state, event, FAILED, reason=data["reason"])
            return
        state["lease"] = without_holders(state.get("lease"), [event["actor"]])
        if state["lease"] is None:  # nobody else holds it (another site's worker may)
            state.update(state=READY, queue_group=1, available_at=data["retry_at"])
    elif name == "cancelled" and state.get("state") in OPEN:
        _finish(state, event, CANCELLED, reason=data["reason"])
    elif name in ("synchronised", "failed", "cancelled"):
        state["ignored_results"] = state.get("ignored_results", 0) + 1  # another site's, apart


def _start_round(state: Doc, event: Doc) -> None:
    data = event["data"]
    state.update(
        source_id=data["source_id"],
        order=data["order"],
        round=data["round"],
        queued_by=data["by"],
        queue=QUEUE,
        state=READY,
        queue_group=0,
        available_at=event["at"],
        queued_at=event["at"],
        lease=None,
        holders=[],
        attempts=0,
        last_reason=None,
        counts=None,
        finished_at=None,
        content_paths={},
    )


def _note_dispatch(state: Doc, data: dict[str, Any]) -> None:
    """Remember the content path a holder of the round was told (its files go there)."""
    if data["round"] == state.get("round"):
        state.setdefault("content_paths", {})[data["holder"]] = data["content_path"]


def _finish(state: Doc, event: Doc, outcome: str, **fields: Any) -> None:
    """End the round; keep a line of it in `history` (newest first, HISTORY of them)."""
    state.update(state=outcome, lease=None, finished_at=event["at"], **fields)
    line = {key: state.get(key) for key in ("order", "queued_at", "finished_at", "attempts")}
    line.update(state=outcome, counts=state.get("counts"), reason=fields.get("reason"))
    state["history"] = [line, *state.get("history", [])][:HISTORY]
    past = {key: state.get(key) for key in ("round", "holders", "content_paths")}
    state["past_rounds"] = [past, *state.get("past_rounds", [])][:HISTORY]
    if outcome == SYNCHRONISED:
        state["last_synchronised"] = {"order": state["order"], "round": state["round"]}
        state["last_synchronised"]["at"] = event["at"]


def public_order(doc: Doc | None) -> dict[str, Any] | None:
    """An order's state as the admin API shows it."""
    if doc is None or "order" not in doc:
        return None
    lease = doc.get("lease") or {}
    return {
        "order": doc["order"],
        "state": doc["state"],
        "queued_at": doc.get("queued_at"),
        "queued_by": doc.get("queued_by"),
        "attempts": doc.get("attempts", 0),
        "holder": lease.get("holder"),
        "expires_at": lease.get("expires_at"),
        "retry_at": doc.get("available_at") if doc["state"] == READY else None,
        "last_reason": doc.get("last_reason"),
        "counts": doc.get("counts"),
        "finished_at": doc.get("finished_at"),
    }


# ---------------------------------------------------------------- ordering a sync


@dataclasses.dataclass(frozen=True)
class OrderResult:
    """What ordering a sync did: "queued" (a new round) or "already_queued"."""

    status: str
    order: Doc

    @property
    def created(self) -> bool:
        """True when this call queued a new order (the API answers 202)."""
        return self.status == "queued"


def queued_decision(source_id: str, by: str) -> Decision:
    """Start a new round unless one is ready or leased."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None and state.get("state") in OPEN:
            return None
        round_number = (state or {}).get("round", 0) + 1
        data = {"source_id": source_id, "order": order_id(source_id, round_number)}
        return "queued", {**data, "round": round_number, "by": by}

    return decide


def order_sync(db: Database, source_id: str, *, by: str, actor: str, now: datetime) -> OrderResult:
    """Queue a sync of an enabled source, once: an open order is reported, not doubled."""
    source = aggregate.get_source(db, source_id)
    if not source.get("enabled"):
        raise SourceDisabledError(f"Source {source_id!r} is disabled.", id=source_id)
    decide = queued_decision(source_id, by)
    [outcome] = commit(db, [(order_doc_id(source_id), decide)], actor=actor, now=now)
    assert outcome.state is not None  # queued, or open already
    return OrderResult("queued" if outcome.recorded else "already_queued", outcome.state)


def get_order(db: Database, source_id: str) -> Doc | None:
    """The source's sync order aggregate (None before its first order)."""
    return db.get_or_none(order_doc_id(source_id))


def round_record(state: Doc, round_number: int) -> Doc:
    """The projection's note of one round: `holders` and `content_paths` ({} if forgotten)."""
    if round_number == state.get("round"):
        return state
    past = state.get("past_rounds", [])
    return next((line for line in past if line.get("round") == round_number), {})


# ---------------------------------------------------------------- enabling, disabling


def _cancel_decision(reason: str) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("state") != READY:
            return None
        data = {k: state[k] for k in ("source_id", "order", "round")}
        return "cancelled", {**data, "reason": reason}

    return decide


def set_enabled(
    db: Database, source_id: str, enabled: bool, *, actor: str, now: datetime
) -> tuple[Doc, bool]:
    """Enable or disable a source; return (its state, whether that changed anything).

    Disabling cancels a waiting order in the same event, so no worker syncs a
    disabled source later; a leased one runs to its end (its worker is busy).
    """
    decisions = [(aggregate.source_doc_id(source_id), aggregate.enabled_decision(enabled))]
    if not enabled:
        decisions.append((order_doc_id(source_id), _cancel_decision("source disabled")))
    outcomes = commit(db, decisions, actor=actor, now=now)
    if outcomes[0].state is None:
        raise SourceNotFoundError(f"No source has id {source_id!r}.", id=source_id)
    return outcomes[0].state, outcomes[0].recorded


# ---------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """A worker's report on one order. `any_round`: an admin settling it by hand."""

    source_id: str
    round: int
    status: str  # SYNCHRONISED or FAILED
    holder: str
    reason: str | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    any_round: bool = False


def _ignored_because(state: Doc, result: SyncResult) -> str | None:
    """Why a result must not move the order, or None when it applies (as archive.py)."""
    if result.round != state.get("round"):
        return "stale"
    if not result.any_round and result.holder not in state.get("holders", []):
        return "stale"
    holder = (state.get("lease") or {}).get("holder")
    if result.status == FAILED and state.get("state") == LEASED and holder != result.holder:
        return "superseded"
    if state.get("state") not in OPEN:
        return "settled"  # cancelled or ended: kept in the log, the round stays as it ended
    return None


def _repeats(state: Doc, result: SyncResult) -> bool:
    """The round ended with exactly this outcome already (a retried request)."""
    if result.round != state.get("round") or state.get("state") != result.status:
        return False
    if result.status == SYNCHRONISED:
        return bool(state.get("counts") == result.counts)
    return bool(state.get("last_reason") == result.reason)


def _result_decision(result: SyncResult, now: datetime, max_attempts: int) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or result.round > state.get("round", 0) or _repeats(state, result):
            return None  # a repeated request records nothing
        data: dict[str, Any] = {"source_id": result.source_id, "round": result.round}
        data["order"] = order_id(result.source_id, result.round)
        if result.status == SYNCHRONISED:
            data["counts"] = result.counts
        else:
            data["reason"] = result.reason
        ignored = _ignored_because(state, result)
        if ignored:
            return result.status, {**data, "ignored": ignored}
        if result.status == SYNCHRONISED:
            return SYNCHRONISED, data
        attempt = state.get("attempts", 0) + 1
        if attempt >= max_attempts:
            return FAILED, {**data, "attempt": attempt, "final": True}
        return FAILED, {**data, "attempt": attempt, "retry_at": iso(now + retry_delay(attempt))}

    return decide


def report_result(
    db: Database, result: SyncResult, *, now: datetime, max_attempts: int
) -> dict[str, Any]:
    """Record a worker's end of a sync; return the order's report.

    Accepted after the lease expired (the same worker's late result applies).
    Raises OrderNotFoundError for a round the source never had.
    """
    check_round_exists(db, result.source_id, result.round)  # rounds only ever grow
    decide = _result_decision(result, now, max(1, max_attempts))
    [outcome] = commit(db, [(order_doc_id(result.source_id), decide)], actor=result.holder, now=now)
    state = outcome.state or {}
    report: dict[str, Any] = {**(public_order(state) or {}), "recorded": outcome.recorded}
    data = outcome.event["data"] if outcome.event else {}
    for key in ("ignored", "retry_at", "final"):
        if key in data:
            report[key] = data[key]
    return report


def check_round_exists(db: Database, source_id: str, round_number: int) -> Doc:
    """The order aggregate, when `round_number` is one of its rounds; else OrderNotFoundError."""
    state = get_order(db, source_id)
    if state is None or not 1 <= round_number <= state.get("round", 0):
        order = order_id(source_id, round_number)
        raise OrderNotFoundError(f"Source {source_id!r} has no order {order!r}.", order=order)
    return state
