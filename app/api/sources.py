"""Sources over HTTP: admins manage them and order syncs; workers lease sync orders.

Admins: POST/GET /api/sources, GET/PATCH /api/sources/<id>, PUT/DELETE
/api/sources/<id>/cookies, POST /api/sources/<id>/sync, GET /api/sources/<id>/files.
Workers (and admins): GET /api/sources/next, POST /api/sources/<id>/files (the
order's holders), POST /api/sources/<id>/renew (its current holder),
POST /api/sources/<id>/synchronised. Bodies are JSON objects (under a JSON
content type); the cookies may also come as the text of the request body.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import ADMIN, ANONYMOUS, WORKER, current_principal, requires
from app.api.web import context, json_body
from app.errors import (
    InvalidStatusError,
    MissingFieldError,
    ValidationFailedError,
)
from app.queues.archive import check_reason
from app.sources import aggregate, checks, cookies, dispatch, files, matching, orders
from app.sources.aggregate import SourceSpec

bp = Blueprint("sources", __name__)

CREATE_FIELDS = frozenset(
    {"id", "url", "content_path", "schedule", "sync_remote_deletes", "enabled"}
)
CHANGE_FIELDS = CREATE_FIELDS - {"id"}
DEFAULT_PAGE, MAX_PAGE = 100, files.MAX_PAGE


def _object() -> dict[str, Any]:
    """The JSON object of the body (415 for another type, 400 for anything but an object)."""
    body = json_body(request)
    if not isinstance(body, dict):
        raise ValidationFailedError("The JSON body must be an object.")
    return body


def _check_known(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse unknown fields: a misspelt one would otherwise be silently ignored."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationFailedError(
            f"Unknown fields: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.",
            fields=unknown,
        )


def _required(body: dict[str, Any], name: str) -> Any:
    """A field that must be present (and not null); else 400 missing_field naming it."""
    if body.get(name) is None:
        raise MissingFieldError(f"The field {name!r} is required.", field=name)
    return body[name]


def source_detail(source: dict[str, Any]) -> dict[str, Any]:
    """A source with its current order, its finished orders and its file counts."""
    db = context().db
    order = orders.get_order(db, source["id"])
    return {
        **aggregate.public_source(source),
        "order": orders.public_order(order),
        "history": (order or {}).get("history", []),
        "files": files.count_files(db, source["id"]),
    }


# ---------------------------------------------------------------- admins


@bp.post("/api/sources")
@requires(ADMIN)
def add_source() -> tuple[Response, int]:
    """Add a source. Who: admins. 201 with the source; 409 source_exists."""
    body = _object()
    _check_known(body, CREATE_FIELDS)
    source_id = checks.check_source_id(_required(body, "id"))
    _required(body, "url"), _required(body, "content_path")
    spec = SourceSpec(id=source_id, **checks.checked_fields(body))
    ctx = context()
    doc = aggregate.add_source(ctx.db, spec, actor=current_principal().holder, now=ctx.clock())
    return jsonify(aggregate.public_source(doc)), 201


@bp.get("/api/sources")
@requires(ADMIN)
def list_sources() -> Response:
    """Every source, by id. Who: admins."""
    docs = aggregate.list_sources(context().db)
    return jsonify({"sources": [aggregate.public_source(doc) for doc in docs]})


@bp.get("/api/sources/<source_id>")
@requires(ADMIN)
def get_source(source_id: str) -> Response:
    """One source with its orders and file counts. Who: admins."""
    source = aggregate.get_source(context().db, checks.check_source_id(source_id))
    return jsonify(source_detail(source))


@bp.patch("/api/sources/<source_id>")
@requires(ADMIN)
def change_source(source_id: str) -> Response:
    """Change url, content_path, schedule, sync_remote_deletes or enabled. Who: admins.

    Answers the source with "changed": false when every field had that value.
    """
    source_id = checks.check_source_id(source_id)
    body = _object()
    _check_known(body, CHANGE_FIELDS)
    fields = checks.checked_fields(body)
    ctx, actor = context(), current_principal().holder
    enabled = fields.pop("enabled", None)
    source, changed = aggregate.change_source(
        ctx.db, source_id, fields, actor=actor, now=ctx.clock()
    )
    if enabled is not None:
        source, toggled = orders.set_enabled(
            ctx.db, source_id, enabled, actor=actor, now=ctx.clock()
        )
        changed = changed or toggled
    return jsonify({**source_detail(source), "changed": changed})


def _cookies_text() -> str:
    """The cookies from the body: its text, or a JSON object's "cookies"."""
    if request.mimetype in ("application/json",) or request.mimetype.endswith("+json"):
        body = _object()
        _check_known(body, frozenset({"cookies"}))
        return checks.check_cookies(_required(body, "cookies"))
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return checks.check_cookies(text)


@bp.put("/api/sources/<source_id>/cookies")
@requires(ADMIN)
def set_cookies(source_id: str) -> Response:
    """Store the source's cookies (cookies.txt text). Who: admins. Never echoed back."""
    source = aggregate.get_source(context().db, checks.check_source_id(source_id))
    text = _cookies_text()
    ctx = context()
    changed = cookies.set_cookies(ctx.db, source_id, text)
    if changed or not source.get("has_cookies"):
        actor = current_principal().holder
        aggregate.record_cookies_change(ctx.db, source_id, True, actor=actor, now=ctx.clock())
    return jsonify({"id": source_id, "has_cookies": True, "changed": changed})


@bp.delete("/api/sources/<source_id>/cookies")
@requires(ADMIN)
def remove_cookies(source_id: str) -> Response:
    """Remove the source's cookies for good. Who: admins."""
    source = aggregate.get_source(context().db, checks.check_source_id(source_id))
    ctx = context()
    removed = cookies.remove_cookies(ctx.db, source_id)
    if removed or source.get("has_cookies"):
        actor = current_principal().holder
        aggregate.record_cookies_change(ctx.db, source_id, False, actor=actor, now=ctx.clock())
    return jsonify({"id": source_id, "has_cookies": False, "removed": removed})


@bp.post("/api/sources/<source_id>/sync")
@requires(ADMIN)
def order_sync(source_id: str) -> tuple[Response, int]:
    """Order a sync now. Who: admins. 202 "queued"; 200 "already_queued" while one is open."""
    ctx = context()
    result = orders.order_sync(
        ctx.db,
        checks.check_source_id(source_id),
        by="admin",
        actor=current_principal().holder,
        now=ctx.clock(),
    )
    body = {"status": result.status, **(orders.public_order(result.order) or {})}
    return jsonify(body), 202 if result.created else 200


def _page_limit(raw: str | None) -> int:
    """`?limit=`: 1 to MAX_PAGE rows, DEFAULT_PAGE when absent."""
    if raw is None:
        return DEFAULT_PAGE
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text[:6]) <= MAX_PAGE:
        raise ValidationFailedError(f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return int(text)


@bp.get("/api/sources/<source_id>/files")
@requires(ADMIN)
def list_files(source_id: str) -> Response:
    """A page of the source's files by name: `?after=<filename>&limit=n` (n ≤ 1000). Who: admins."""
    ctx = context()
    source_id = checks.check_source_id(source_id)
    aggregate.get_source(ctx.db, source_id)
    after = request.args.get("after") or None
    if after is not None:
        after = checks.check_filename(after)
    docs, next_after = files.list_files(
        ctx.db, source_id, after=after, limit=_page_limit(request.args.get("limit"))
    )
    order = orders.get_order(ctx.db, source_id) or {}
    last = (order.get("last_synchronised") or {}).get("round", 0)
    return jsonify({"files": [files.public_file(d, last) for d in docs], "next": next_after})


# ---------------------------------------------------------------- workers


def worker_order(order: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """What GET /api/sources/next hands a worker: everything gallery-dl needs.

    `content_path` is the one recorded for this lease (its files are recorded
    under it); `lease_seconds` tells the worker how often to renew. The
    cookies log in as someone at the remote site, so an anonymous worker
    (`auth.anonymous_workers`) gets null: only a worker with a token is
    trusted with them.
    """
    db, principal = context().db, current_principal()
    holder = principal.holder
    trusted = principal.role != ANONYMOUS
    return {
        "order": order["order"],
        "source_id": source["id"],
        "url": source["url"],
        "content_path": order["content_paths"][holder],
        "sync_remote_deletes": source.get("sync_remote_deletes", False),
        "cookies": cookies.get_cookies(db, source["id"]) if trusted else None,
        "known_files": files.known_files(db, source["id"]),
        "expires_at": dispatch.holder_expiry(order, holder),
        "lease_seconds": context().settings.sources.sync_minutes * 60,
    }


@bp.get("/api/sources/next")
@requires(WORKER)
def lease_next() -> Response:
    """Lease the next due sync order. Who: a worker token (or an admin; an anonymous
    worker gets no cookies). 204 when none is due.

    The lease lasts `sources.sync_minutes`; the reaper returns it after that
    unless the worker renews it (POST /api/sources/<id>/renew). Orders of
    sources disabled meanwhile are cancelled, never handed out.
    """
    ctx = context()
    minutes = ctx.settings.sources.sync_minutes
    leased = dispatch.lease_next(
        ctx.db, ctx.leaser, current_principal().holder, ctx.clock(), minutes
    )
    if leased is None:
        return Response(status=204)
    return jsonify(worker_order(*leased))


@bp.post("/api/sources/<source_id>/renew")
@requires(WORKER)
def renew_lease(source_id: str) -> Response:
    """Extend the caller's lease of an order by `sources.sync_minutes` from now.

    Who: the worker (or admin) holding the order's lease now. {"order"} →
    {"order", "expires_at"}; 409 lease_not_held when the caller holds none
    (reaped and handed on, or ended); 404 order_not_found.
    """
    source_id = checks.check_source_id(source_id)
    body = _object()
    _check_known(body, frozenset({"order"}))
    round_number = orders.parse_order_id(_required(body, "order"), source_id)
    ctx, holder = context(), current_principal().holder
    minutes = ctx.settings.sources.sync_minutes
    state = dispatch.renew_lease(
        ctx.db, source_id, round_number, holder, now=ctx.clock(), minutes=minutes
    )
    return jsonify({"order": state["order"], "expires_at": dispatch.holder_expiry(state, holder)})


@bp.post("/api/sources/<source_id>/files")
@requires(WORKER)
def record_files(source_id: str) -> Response:
    """Record up to 1000 files of an order. Who: a holder of the order's round, or an admin.

    {"order", "files": [{"filename", "status", "size", "sha256"}]} → {"recorded": n}.
    Any bad entry refuses the whole call; a retried call records nothing new.
    A worker that never leased this round gets 403 not_order_holder.
    """
    source_id = checks.check_source_id(source_id)
    body = _object()
    _check_known(body, frozenset({"order", "files"}))
    order = _required(body, "order")
    reports = files.check_file_reports(_required(body, "files"))
    ctx, principal = context(), current_principal()
    if principal.role != ADMIN:  # an admin may settle any round by hand
        round_number = orders.parse_order_id(order, source_id)
        dispatch.check_reporter(ctx.db, source_id, round_number, principal.holder)
    result = files.record_files(
        ctx.db, source_id, order, reports, actor=principal.holder, now=ctx.clock()
    )
    return jsonify(result)


def _check_counts(raw: Any) -> dict[str, int]:
    """{"downloaded": n, "skipped": n, "missing_remotely": n, "deleted": n}; absent keys are 0."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or set(raw) - set(orders.COUNT_KEYS):
        raise ValidationFailedError(
            f"counts must be an object with the keys {', '.join(orders.COUNT_KEYS)}.",
            field="counts",
        )
    counts = {}
    for key in orders.COUNT_KEYS:
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
            raise ValidationFailedError(f"counts.{key} must be a whole number.", field="counts")
        counts[key] = value
    return counts


@bp.post("/api/sources/<source_id>/synchronised")
@requires(WORKER)
def report_synchronised(source_id: str) -> Response:
    """End a sync order: "synchronised", or "failed" with a reason (retried). Who: workers.

    Answers the order's state; a failure after `sources.max_attempts` is final.
    After "synchronised" the source's present files are matched against the
    torrent registry as ingest listings (app/sources/matching.py), summarised
    in "ingest".
    """
    source_id = checks.check_source_id(source_id)
    body = _object()
    _check_known(body, frozenset({"order", "status", "reason", "counts"}))
    round_number = orders.parse_order_id(_required(body, "order"), source_id)
    status = _required(body, "status")
    if status not in (orders.SYNCHRONISED, orders.FAILED):
        raise InvalidStatusError(f"status must be 'synchronised' or 'failed', got {status!r}.")
    reason = checks.check_reason_text(check_reason(body.get("reason")))
    counts = _check_counts(body.get("counts"))
    ctx, principal = context(), current_principal()
    result = orders.SyncResult(
        source_id,
        round_number,
        status,
        principal.holder,
        reason=reason if status == orders.FAILED else None,
        counts=counts,
        any_round=principal.role == ADMIN,
    )
    max_attempts = ctx.settings.sources.max_attempts
    report = orders.report_result(ctx.db, result, now=ctx.clock(), max_attempts=max_attempts)
    synchronised = status == orders.SYNCHRONISED == report.get("state")
    if synchronised and "ignored" not in report:
        # the source's files are matched like an ingest listing (a retry matches again: no-op)
        report["ingest"] = matching.match_source(ctx.db, source_id, now=ctx.clock())
    return jsonify(report)
