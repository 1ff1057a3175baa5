"""Handing a sync order to a worker, keeping it leased while it works, and who may report.

Leasing goes through the shared queue (app/queues/leasing.py), which knows
nothing of sources. Right after it, one more decision on the order records
what the worker is told (`dispatched` {source_id, order, round, holder,
content_path}): a file's `location` is where that worker put it, even when
an admin changes the source's content path while it syncs. The same decision
refuses the order of a source that was disabled after it was queued: it is
`cancelled` at once ("source disabled") and the next ready order is tried.
Disabling cancels only a waiting order, so without this an order leased when
the source was disabled would come back to the queue (its lease expired, or
it failed and is retried) and be synced again.

A sync may take longer than its lease (`sources.sync_minutes`): the worker
renews it (`lease_renewed`, app/queues/holders.py) at each batch of files
and every third of the lease, so the reaper does not hand the order to a
second worker while the first still runs. Only a current holder may renew.

File reports are taken from the holders of the order's round (any holder,
even one whose lease expired: its files are facts, invariant 3) and from
admins; anyone else is refused (403 `not_order_holder`) and nothing is
recorded, so a worker token cannot rewrite another source's file records.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.errors import LeaseNotHeldError, NotOrderHolderError
from app.queues.holders import LEASED, holders_of
from app.queues.leasing import QueueLeaser
from app.sources import aggregate, orders
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso

DISABLED_REASON = "source disabled"
MAX_CANCELLED = 20  # orders of disabled sources cancelled in one lease call, at most


def lease_next(
    db: Database, leaser: QueueLeaser, holder: str, now: datetime, minutes: float
) -> tuple[Doc, Doc] | None:
    """Lease the oldest ready order of an enabled source; (order, source), or None.

    Orders of disabled sources met on the way are cancelled, not handed out.
    """
    for _ in range(MAX_CANCELLED):
        leased = leaser.lease(
            orders.QUEUE, holder, 1, now, timedelta(minutes=minutes), actor=holder
        )
        if not leased:
            return None
        dispatched = dispatch(db, leased[0], holder, now)
        if dispatched is not None:
            return dispatched
    return None


def dispatch(db: Database, order: Doc, holder: str, now: datetime) -> tuple[Doc, Doc] | None:
    """Record what `holder` is told about the order it just leased, or cancel the order
    when its source is disabled (then None)."""
    source = aggregate.get_source(db, order["source_id"])
    decide = _dispatch_decision(source, holder, order["round"])
    doc_id = orders.order_doc_id(source["id"])
    [outcome] = commit(db, [(doc_id, decide)], actor=holder, now=now)
    if outcome.event is None or outcome.event["name"] != "dispatched" or not outcome.state:
        return None
    return outcome.state, source


def _dispatch_decision(source: Doc, holder: str, round_number: int) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not holds_lease(state, round_number, holder):
            return None  # reaped or ended meanwhile: nothing to hand out
        assert state is not None
        data = {k: state[k] for k in ("source_id", "order", "round")}
        if not source.get("enabled"):
            return orders.CANCELLED, {**data, "reason": DISABLED_REASON}
        return "dispatched", {**data, "holder": holder, "content_path": source["content_path"]}

    return decide


def holds_lease(state: Doc | None, round_number: int, holder: str) -> bool:
    """True when `holder` holds a lease of this round of the order now."""
    if state is None or state.get("state") != LEASED or state.get("round") != round_number:
        return False
    return any(h["holder"] == holder for h in holders_of(state.get("lease")))


# ---------------------------------------------------------------- renewing


def renew_lease(
    db: Database, source_id: str, round_number: int, holder: str, *, now: datetime, minutes: float
) -> Doc:
    """Extend `holder`'s lease of the order to `minutes` from now; return the order.

    Raises OrderNotFoundError for a round the source never had and
    LeaseNotHeldError when the holder does not hold it now (reaped and
    handed on, or ended): the worker goes on, its results are still taken.
    """
    orders.check_round_exists(db, source_id, round_number)
    expires_at = iso(now + timedelta(minutes=minutes))

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not holds_lease(state, round_number, holder):
            return None
        return "lease_renewed", {"holder": holder, "expires_at": expires_at}

    [outcome] = commit(db, [(orders.order_doc_id(source_id), decide)], actor=holder, now=now)
    if not outcome.recorded or outcome.state is None:
        order = orders.order_id(source_id, round_number)
        raise LeaseNotHeldError(
            f"{holder!r} does not hold a lease of order {order!r}.", order=order
        )
    return outcome.state


def holder_expiry(state: Doc, holder: str) -> str | None:
    """When `holder`'s own lease of the order ends (None: it holds none)."""
    found = [h["expires_at"] for h in holders_of(state.get("lease")) if h["holder"] == holder]
    return found[0] if found else None


# ---------------------------------------------------------------- reporting


def check_reporter(db: Database, source_id: str, round_number: int, holder: str) -> Doc:
    """The order, when `holder` held this round; else NotOrderHolderError (403).

    Holders of a round only ever grow, so a check that passes stays true
    while the report is recorded.
    """
    state = orders.check_round_exists(db, source_id, round_number)
    if holder not in orders.round_record(state, round_number).get("holders", []):
        order = orders.order_id(source_id, round_number)
        raise NotOrderHolderError(
            f"{holder!r} never leased order {order!r}; only its holders report its files.",
            order=order,
        )
    return state
