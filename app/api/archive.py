"""Patchwork's URL archive queue and worker tracking, over HTTP.

Queuers add URLs; workers lease them, report results and send heartbeats;
anyone may read /api/status. Tokens travel in `X-AUTHENTICATION`, as
Patchwork's clients send them. Fields come as a form (Patchwork's clients) or
as a JSON object with the same keys (under a JSON content type only).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import ADMIN, QUEUER, WORKER, check_name, current_principal, requires
from app.api.web import context, form_or_json_fields
from app.errors import (
    InvalidNameError,
    InvalidStatusError,
    MissingFieldError,
    ValidationFailedError,
)
from app.queues import archive, leases, workers
from app.queues.archive import Completion
from app.timeutil import iso

bp = Blueprint("archive", __name__)


def _fields() -> dict[str, Any]:
    """The request's fields, from a form (Patchwork's clients) or a JSON object."""
    return form_or_json_fields(request)


def _required(fields: dict[str, Any], name: str) -> Any:
    """A field that must be present and not blank; else 400 missing_field naming it."""
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MissingFieldError(f"The field {name!r} is required.", field=name)
    return value


@bp.post("/api/worker/queue")
@requires(QUEUER)
def queue_url() -> tuple[Response, int]:
    """Queue a URL once. Who: a queuer token (or an admin).

    Fields `url` and `mode` (0 archive, the default; 1 re-archive; 2 delete).
    201 {"status": "queued", …} when a new round starts; 200 {"status":
    "already_queued", …} when the URL is waiting or leased already.
    """
    fields = _fields()
    url = archive.check_url(_required(fields, "url"))
    mode = archive.check_mode(fields.get("mode"))
    ctx = context()
    result = archive.queue_url(ctx.db, url, mode, actor=current_principal().holder, now=ctx.clock())
    task = result.task
    body = {
        "status": result.status,
        "id": task["id"],
        "url": task["url"],
        "mode": task["mode"],
        "state": task["state"],
    }
    return jsonify(body), 201 if result.created else 200


@bp.get("/api/worker/next")
@requires(WORKER)
def lease_next() -> Response:
    """Lease the oldest ready URL. Who: a worker token (or an admin).

    {"next_video": url, "mode": n, "id": n}; 204 with an empty body when
    nothing is ready. The lease lasts `leases.archive_minutes`.
    """
    ctx = context()
    task = archive.lease_next(
        ctx.leaser, current_principal().holder, ctx.clock(), ctx.settings.leases.archive_minutes
    )
    if task is None:
        return Response(status=204)
    return jsonify(task)


def _check_completion_status(raw: Any) -> str:
    status = raw.strip().lower() if isinstance(raw, str) else raw
    if status not in archive.COMPLETION_STATUSES:
        raise InvalidStatusError(f"status must be 'done' or 'failed', got {raw!r}.")
    return str(status)


@bp.post("/api/worker/complete")
@requires(WORKER)
def complete_task() -> Response:
    """Report a URL task "done" or "failed". Who: a worker token (or an admin).

    Fields `id`, `status`, optional `reason`. Accepted even after the lease
    expired; a repeat on a settled task answers its state with "recorded": false.
    """
    fields = _fields()
    task_id = archive.check_task_id(_required(fields, "id"))
    status = _check_completion_status(_required(fields, "status"))
    reason = archive.check_reason(fields.get("reason"))
    ctx, principal = context(), current_principal()
    result = Completion(
        task_id, status, principal.holder, reason, any_round=principal.role == ADMIN
    )
    report = archive.complete_task(
        ctx.db, result, now=ctx.clock(), max_attempts=ctx.settings.leases.archive_max_attempts
    )
    return jsonify(report)


@bp.get("/api/worker/tasks")
@requires(ADMIN)
def list_tasks() -> Response:
    """URL tasks with mode, state, attempts, holders and last failure reason. Who: admins.

    `?state=ready|leased|done|failed` filters; at most 100 tasks, newest first,
    with the count of every state.
    """
    state = request.args.get("state") or None
    if state is not None and state not in archive.STATES:
        raise InvalidStatusError(
            f"state must be one of {', '.join(archive.STATES)}, got {state!r}."
        )
    ctx = context()
    tasks = [leases.url_task_row(doc) for doc in archive.list_tasks(ctx.db, state)]
    return jsonify({"counts": archive.count_by_state(ctx.db), "tasks": tasks})


@bp.post("/api/worker/retry")
@requires(ADMIN)
def retry_task() -> Response:
    """Queue a task that failed for good again, as a new round. Who: admins.

    Field `id`. Answers the task's report; "recorded": false when the task
    is not failed (nothing changed); 404 task_not_found for an unknown id.
    """
    task_id = archive.check_task_id(_required(_fields(), "id"))
    ctx = context()
    report = archive.retry_task(ctx.db, task_id, actor=current_principal().holder, now=ctx.clock())
    return jsonify(report)


def _check_worker_name(raw: Any) -> str:
    name = raw.strip() if isinstance(raw, str) else ""
    try:
        check_name(name)
    except ValidationFailedError as exc:
        raise InvalidNameError(exc.reason) from None
    return name


def _check_status_text(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw.strip()) > workers.MAX_STATUS_CHARS:
        raise InvalidStatusError(
            f"status must be text of at most {workers.MAX_STATUS_CHARS} characters."
        )
    return raw.strip()


@bp.post("/api/worker/heartbeat")
@requires(WORKER)
def heartbeat() -> Response:
    """Say a worker is alive and what it is doing. Who: a worker token (or an admin).

    Fields `name` and `status` (free text). A name that another active token
    carries is refused (403 forbidden): that worker record is the token's own.
    """
    fields = _fields()
    name = _check_worker_name(_required(fields, "name"))
    status = _check_status_text(_required(fields, "status"))
    ctx, principal = context(), current_principal()
    if principal.role != ADMIN:
        workers.check_may_report_as(ctx.db, name, principal.holder)
    now = ctx.clock()
    interval = workers.record_interval(
        ctx.settings.workers.heartbeat_record_seconds, ctx.settings.workers.offline_after_seconds
    )
    workers.record_heartbeat(
        ctx.db, name, status, actor=principal.holder, now=now, interval=interval
    )
    return jsonify({"ok": True, "name": name, "last_seen": iso(now)})


@bp.get("/api/status")
def status() -> Response:
    """Workers and the archive queue's counts. Who: anyone, no credential (as in Patchwork)."""
    ctx = context()
    known = workers.list_workers(ctx.db, ctx.clock(), ctx.settings.workers.offline_after_seconds)
    return jsonify({"workers": known, "queue": archive.count_by_state(ctx.db)})
