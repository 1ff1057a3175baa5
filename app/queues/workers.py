"""Workers: who is out there, what they say they are doing, and what they finished.

A worker aggregate, `worker:<name>`, is fed by two sources: heartbeats
(Patchwork's `name` + free-text `status`) and the results a token holder
reports on URL tasks (`worker:<holder>`). Heartbeats come every few seconds,
so only a change of status, or the first beat after
`workers.heartbeat_record_seconds`, becomes an event; the rest answer without
writing anything.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from app.errors import ForbiddenError
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import ConcurrencyError, Decision, Doc
from app.timeutil import iso

log = logging.getLogger(__name__)

PREFIX = "worker:"
MAX_STATUS_CHARS = 200
# A result must never be lost to a race with the same worker's other results.
RESULT_RETRIES = 20
# Results counted lately, by task event id: far more than can land while one
# result retries, so a retry always finds its own result if it was counted.
RECENT_SOURCES_KEPT = 50
_PAGE = 1000


def worker_doc_id(name: str) -> str:
    """The aggregate id of a worker: `worker:<name>`, listed by an _all_docs id range."""
    return f"{PREFIX}{name}"


def apply_worker_event(state: Doc, event: Doc) -> None:
    """Project one worker event; any event means the worker was seen at its time."""
    if "name" not in state:
        state.update(
            name=state["_id"].removeprefix(PREFIX),
            status=None,
            heartbeat_at=None,
            last_seen=None,
            tasks_done=0,
            tasks_failed=0,
        )
    state["last_seen"] = max(state["last_seen"] or "", event["at"])
    name, data = event["name"], event["data"]
    if name == "heartbeat_recorded":
        state.update(status=data["status"], heartbeat_at=event["at"])
    elif name in ("task_completed", "task_failed"):
        state["tasks_done" if name == "task_completed" else "tasks_failed"] += 1
        sources = state.setdefault("recent_sources", [])
        sources.append(data["source"])
        del sources[:-RECENT_SOURCES_KEPT]


def check_may_report_as(db: Database, name: str, holder: str) -> None:
    """Refuse a heartbeat under the name of another active token.

    Names that no token carries are shared, as in Patchwork (one worker token,
    many machines); a token's own name holds its task counts and is its own.
    """
    if name == holder:
        return
    rows = db.view("auth", "tokens_by_name", key=name)
    if any(not row["value"]["revoked"] for row in rows):
        raise ForbiddenError(f"The worker name {name!r} belongs to another token.", name=name)


def record_interval(record_seconds: float, offline_after_seconds: float) -> timedelta:
    """How long an unchanged status goes unrecorded.

    Never more than half the offline threshold, so a worker that keeps beating
    can never look offline because its beats were skipped.
    """
    return timedelta(seconds=min(record_seconds, offline_after_seconds / 2))


def _heartbeat_decision(status: str, now: datetime, interval: timedelta) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        recent = state is not None and (state.get("heartbeat_at") or "") > iso(now - interval)
        if recent and state is not None and state.get("status") == status:
            return None
        return "heartbeat_recorded", {"status": status}

    return decide


def record_heartbeat(
    db: Database, name: str, status: str, *, actor: str, now: datetime, interval: timedelta
) -> bool:
    """Note that a worker is alive; return whether an event was written.

    Assumes a checked name and status (the API checks both).
    """
    [outcome] = commit(
        db,
        [(worker_doc_id(name), _heartbeat_decision(status, now, interval))],
        actor=actor,
        now=now,
    )
    return outcome.recorded


def _result_decision(event: str, task_id: int, source: str) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None and source in state.get("recent_sources", []):
            return None  # counted already: a retry after our event had landed
        return event, {"task": task_id, "source": source}

    return decide


def record_task_result(
    db: Database, name: str, task_id: int, status: str, *, source: str, now: datetime
) -> None:
    """Count a URL task result, identified by `source` (its task change: event id/task id).

    One worker's concurrent results race for the same event version. commit
    re-decides a loser, and when the event store gives up (ConcurrencyError,
    possibly after our event was written) we retry after a pause: the decision
    skips a source the worker has counted, so a retry never counts twice.
    """
    event = "task_completed" if status == "done" else "task_failed"
    decide = _result_decision(event, task_id, source)
    for attempt in range(RESULT_RETRIES):
        try:
            [outcome] = commit(db, [(worker_doc_id(name), decide)], actor=name, now=now)
        except ConcurrencyError:
            outcome = None
        if outcome is not None and not outcome.lost_race:
            return
        time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    log.error("worker %s: result %s not counted after %d tries", name, source, RESULT_RETRIES)


def list_workers(db: Database, now: datetime, offline_after_seconds: float) -> list[dict[str, Any]]:
    """Every known worker by name, with `online` judged by its last sign of life."""
    since = iso(now - timedelta(seconds=offline_after_seconds))
    return [
        {
            "name": doc["name"],
            "status": doc.get("status"),
            "last_seen": doc.get("last_seen"),
            "online": (doc.get("last_seen") or "") >= since,
            "tasks_done": doc.get("tasks_done", 0),
            "tasks_failed": doc.get("tasks_failed", 0),
        }
        for doc in _iter_worker_docs(db)
    ]


def _iter_worker_docs(db: Database) -> Iterator[Doc]:
    """Page through the `worker:` id range of _all_docs (no view needed)."""
    return db.iter_prefix(PREFIX, page_size=_PAGE)
