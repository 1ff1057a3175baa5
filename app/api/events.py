"""The event stream (server-sent events) and webhooks over HTTP.

GET /api/events streams the event log (readers' tokens and admins; see
app/stream/sse.py for the message format). The webhook routes are admins':
POST /api/webhooks {url, types?, names?, since?} registers one and answers
its secret this once; GET /api/webhooks shows them with their delivery
state (`pending` there is an estimate that reads no log rows; GET
/api/webhooks/<id> counts it, up to 2,000 rows); DELETE /api/webhooks/<id>
removes one; the dead-letter routes list what failed every attempt and queue
it for redelivery (the scheduler's delivery job makes the requests, so a
slow receiver never holds a request).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Request, Response, current_app, jsonify, request, stream_with_context

from app.accounts.auth import (
    ADMIN,
    READER,
    Authenticator,
    current_principal,
    may_act_as,
    requires,
)
from app.api.web import checked_body, context, object_schema
from app.config import EventsSettings
from app.errors import (
    ApiError,
    InvalidEventIdError,
    TooManyStreamsError,
    ValidationFailedError,
    error_response,
)
from app.store.couch import CouchError, CouchUnavailableError
from app.stream import deadletters, sse, webhooks
from app.stream.delivery import delivery_state
from app.stream.feed import (
    Batch,
    EventFilter,
    check_filter_values,
    current_seq,
    is_valid_seq,
    read_batch,
)
from app.stream.sse import StreamRequest, StreamSlots

bp = Blueprint("events", __name__)

_FILTER_LIST = {
    "type": "array",
    "items": {"type": "string", "maxLength": 64},
    "maxItems": 32,
}
WEBHOOK_BODY = object_schema(
    {
        "url": {"type": "string", "maxLength": webhooks.MAX_URL_LENGTH},
        "types": _FILTER_LIST,
        "names": _FILTER_LIST,
        "since": {"enum": list(webhooks.SINCE_CHOICES)},
    },
    ["url"],
)


@bp.get("/api/events")
@requires(READER)
def stream_events() -> Response:
    """The event log as server-sent events, from Last-Event-ID (or ?since=; default 0).

    Who: reader tokens and admins. ?type= (aggregate types) and ?name= (event
    names) filter, repeatable; ?max_seconds= and ?limit= end the response
    sooner than `events.stream_max_seconds`. 400 invalid_event_id for a
    resumption point the log does not know; 503 too_many_streams when this
    process has `events.max_streams` open (Retry-After says when to retry).
    A credential revoked meanwhile ends the response within
    `auth.credential_cache_seconds` (plus a heartbeat).
    """
    settings: EventsSettings = context().settings.events
    wanted = parse_stream_request(request, settings)
    release = _stream_slots(settings).take()
    if release is None:
        return _too_many_streams(settings)
    try:
        first = _first_batch(wanted, settings)
        allowed = _credential_check(request._get_current_object())  # type: ignore[attr-defined]
        body = sse.stream_events(context().db, wanted, settings, first, allowed=allowed)
        response = Response(stream_with_context(body), mimetype="text/event-stream")
    except BaseException:
        release()
        raise
    response.call_on_close(release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once
    return response


def _credential_check(req: Request) -> Callable[[], bool]:
    """Whether the caller's credential still lets them read the stream, asked again
    at every page and heartbeat. The Authenticator's cache makes that a dict lookup;
    once the cached verdict expires, a revoked token or removed user fails."""
    authenticator: Authenticator = current_app.extensions["distleech"].auth

    def allowed() -> bool:
        try:
            principal = authenticator.identify(req)
        except ApiError:
            return False
        return principal is not None and may_act_as(principal.role, (READER,))

    return allowed


def parse_stream_request(req: Request, settings: EventsSettings) -> StreamRequest:
    """The consumer's start, filters and bounds; raise 400s naming what is wrong."""
    since = (req.headers.get("Last-Event-ID") or "").strip() or req.args.get("since", "0").strip()
    if not is_valid_seq(since):
        raise InvalidEventIdError(f"{since[:100]!r} is not a sequence of the event log.")
    if since == "now":
        since = current_seq(context().db)
    try:
        wanted = EventFilter(
            check_filter_values(req.args.getlist("type"), "type"),
            check_filter_values(req.args.getlist("name"), "name"),
        )
    except ValueError as exc:
        raise ValidationFailedError(f"Invalid filter: {exc}.") from None
    max_seconds = _number(req.args.get("max_seconds"), "max_seconds", settings.stream_max_seconds)
    limit = req.args.get("limit")
    return StreamRequest(
        since=since,
        filter=wanted,
        max_seconds=min(max_seconds, settings.stream_max_seconds),
        limit=None if limit is None else int(_number(limit, "limit", 0, whole=True)),
    )


def _number(raw: str | None, name: str, default: float, *, whole: bool = False) -> float:
    if raw is None:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = 0
    if not value > 0 or value != value:  # also refuses NaN
        kind = "a whole number" if whole else "a number"
        raise ValidationFailedError(f"{name} must be {kind} above 0, got {raw!r}.", field=name)
    return value


def _first_batch(wanted: StreamRequest, settings: EventsSettings) -> Batch:
    """Read the first page before the response starts, so a bad `since` is a 400.

    Apache CouchDB answers an unknown seq with 400; pouchdb-server accepts
    any text and finds nothing after it.
    """
    try:
        return read_batch(context().db, wanted.since, settings.batch)
    except CouchUnavailableError:
        raise
    except CouchError as exc:
        if exc.status == 400:
            reason = f"The event log refused since={wanted.since[:100]!r}."
            raise InvalidEventIdError(reason) from None
        raise


def _stream_slots(settings: EventsSettings) -> StreamSlots:
    """This process's stream slots, made with the app (one app per process)."""
    slots = current_app.extensions.get("distleech.streams")
    if slots is None:
        slots = current_app.extensions.setdefault(
            "distleech.streams", StreamSlots(settings.max_streams)
        )
    assert isinstance(slots, StreamSlots)
    return slots


def _too_many_streams(settings: EventsSettings) -> Response:
    error = TooManyStreamsError(
        f"This process serves {settings.max_streams} event streams already; retry shortly.",
        retry_after=int(settings.retry_seconds) + 1,
    )
    response = error_response(error)
    response.headers["Retry-After"] = str(int(settings.retry_seconds) + 1)
    return response


# ---------------------------------------------------------------- webhooks (admins)


@bp.post("/api/webhooks")
@requires(ADMIN)
def add_webhook() -> tuple[Response, int]:
    """Register a webhook {url, types?, names?, since?: now|start}; 201 with its secret, once.

    Who: admins. 400 invalid_url (not http(s), with user:password@, or a
    host that does not resolve or resolves to a loopback, private or
    link-local address unless `events.webhook_allow_private`), 400
    validation_failed for a bad filter.
    """
    body = checked_body(WEBHOOK_BODY)
    ctx = context()
    made = webhooks.register_webhook(
        ctx.db,
        body["url"],
        types=body.get("types"),
        names=body.get("names"),
        since=body.get("since", "now"),
        allow_private=ctx.settings.events.webhook_allow_private,
        actor=current_principal().holder,
        now=ctx.clock(),
    )
    response = jsonify(made)
    response.headers["Cache-Control"] = "no-store"  # the secret is inside
    return response, 201


@bp.get("/api/webhooks")
@requires(ADMIN)
def list_webhooks() -> Response:
    """Every active webhook with its delivery state (never a secret). Who: admins.

    Cheap whatever the backlog: `pending` is an estimate from positions
    (delivery.estimate_pending, `pending_exact` false), one log read for all.
    """
    db = context().db
    log_seq = current_seq(db)
    return jsonify([_with_state(doc, log_seq) for doc in webhooks.list_webhooks(db)])


@bp.get("/api/webhooks/<webhook_id>")
@requires(ADMIN)
def show_webhook(webhook_id: str) -> Response:
    """One webhook: filters, position, delivered, pending, failures, last error. Who: admins."""
    return jsonify(_with_state(webhooks.get_webhook(context().db, webhook_id)))


@bp.delete("/api/webhooks/<webhook_id>")
@requires(ADMIN)
def remove_webhook(webhook_id: str) -> Response:
    """Remove a webhook, its secret and its dead letters. Who: admins. 404 webhook_not_found."""
    ctx = context()
    actor = current_principal().holder
    return jsonify(webhooks.remove_webhook(ctx.db, webhook_id, actor=actor, now=ctx.clock()))


@bp.get("/api/webhooks/<webhook_id>/dead-letters")
@requires(ADMIN)
def list_dead_letters(webhook_id: str) -> Response:
    """Deliveries that failed every attempt: [{delivery, event, seq, attempts, last_error…}]."""
    db = context().db
    webhooks.get_webhook(db, webhook_id)
    letters = deadletters.list_dead_letters(db, webhook_id)
    return jsonify([deadletters.public_dead_letter(doc) for doc in letters])


@bp.post("/api/webhooks/<webhook_id>/dead-letters/<delivery>/redeliver")
@requires(ADMIN)
def redeliver_dead_letter(webhook_id: str, delivery: str) -> tuple[Response, int]:
    """Queue one dead letter for redelivery by the delivery job; 202. Who: admins."""
    return _redeliver(webhook_id, delivery)


@bp.post("/api/webhooks/<webhook_id>/dead-letters/redeliver")
@requires(ADMIN)
def redeliver_dead_letters(webhook_id: str) -> tuple[Response, int]:
    """Queue every dead letter of a webhook for redelivery; 202. Who: admins."""
    return _redeliver(webhook_id, None)


def _redeliver(webhook_id: str, delivery: str | None) -> tuple[Response, int]:
    ctx = context()
    webhooks.get_webhook(ctx.db, webhook_id)
    queued = deadletters.queue_redelivery(ctx.db, webhook_id, delivery, ctx.clock())
    return jsonify({"webhook": webhook_id, "queued": queued}), 202


def _with_state(doc: dict[str, Any], log_seq: str | None = None) -> dict[str, Any]:
    """The webhook as shown, with its delivery state (an estimated `pending` with log_seq)."""
    shown = webhooks.public_webhook(doc)
    return {**shown, "delivery": delivery_state(context().db, shown["id"], log_seq=log_seq)}
