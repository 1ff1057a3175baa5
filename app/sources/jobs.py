"""The scheduler's side of sources: queue the syncs whose schedule has come round.

A source is due when its schedule's next time after the last order (or,
before any order, after `schedule_from`: when it was added, re-scheduled or
enabled) has passed, and no order of it is open. Counting from the last
order, scheduled or ordered by hand, means:
- an interval schedule restarts at a manual order: every 6 hours with an
  admin's order at 02:50 means the next scheduled sync is at 08:50;
- a cron schedule still fires at its next time after that order: an
  admin's order at 02:50 with "0 3 * * *" is followed by the 03:00 sync
  once the 02:50 order has ended (while it is still ready or leased,
  nothing is queued: one open order per source, and the 03:00 time is then
  counted from it, so it is queued when the scheduler next looks);
- a scheduler that was down for a week queues one sync, not seven.
A cron expression's next time comes from APScheduler's
CronTrigger.from_crontab (UTC), never from a parser of our own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from app.sources import orders
from app.sources.files import DDOC
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Doc
from app.timeutil import parse_iso

log = logging.getLogger(__name__)

ACTOR = "scheduler"


def next_due(schedule: dict[str, Any], after: datetime) -> datetime | None:
    """The first time strictly after `after` that the schedule names (None: never)."""
    if "interval_seconds" in schedule:
        return after + timedelta(seconds=int(schedule["interval_seconds"]))
    trigger = CronTrigger.from_crontab(schedule["cron"], timezone="UTC")
    fire: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire


def last_counted(source: Doc, order: Doc | None) -> datetime:
    """Since when the schedule counts: the later of the last order and `schedule_from`."""
    moments = [source.get("schedule_from") or source.get("added_at") or ""]
    if order is not None:
        moments.append(order.get("queued_at") or "")
    return parse_iso(max(moments))


def is_due(source: Doc, order: Doc | None, now: datetime) -> bool:
    """True when the source's schedule has come round and no order of it is open."""
    if not source.get("enabled") or not source.get("schedule"):
        return False
    if order is not None and order.get("state") in orders.OPEN:
        return False
    due = next_due(source["schedule"], last_counted(source, order))
    return due is not None and due <= now


def queue_due_syncs(db: Database, now: datetime) -> int:
    """Queue a sync of every enabled source whose schedule came round; return how many.

    One event for the whole run: each due source's order is a change of it.
    Idempotent: an open order is left alone (the decision says so), so a
    second run at the same moment queues nothing.
    """
    rows = db.view(DDOC, "scheduled", include_docs=True)
    sources = [row["doc"] for row in rows if row.get("doc")]
    current = db.get_many([orders.order_doc_id(s["id"]) for s in sources])
    due = [s for s in sources if _checked_is_due(s, current.get(orders.order_doc_id(s["id"])), now)]
    if not due:
        return 0
    decisions = [
        (orders.order_doc_id(s["id"]), orders.queued_decision(s["id"], "schedule")) for s in due
    ]
    outcomes = commit(db, decisions, actor=ACTOR, now=now)
    queued = sum(1 for o in outcomes if o.recorded)
    if queued:
        log.info("queued %d scheduled source syncs", queued)
    return queued


def _checked_is_due(source: Doc, order: Doc | None, now: datetime) -> bool:
    """is_due, but a source whose schedule cannot be read is logged and skipped, not fatal."""
    try:
        return is_due(source, order, now)
    except (KeyError, TypeError, ValueError):
        log.warning(
            "source %s: cannot read its schedule %r", source.get("id"), source.get("schedule")
        )
        return False
