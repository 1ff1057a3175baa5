"""Taking the original's sync orders from `GL_SYNC_HTTP_SOURCE_ORDERS`.

A message is the original's JSON object
`{"source_id": 1, "url": "https://…", "content_path": "portraits/"}`.
It is checked by the same rules as the sources API (app/sources/checks.py;
`source_id` may be the original's number or our slug), then:
1. an unknown source is added (id = source_id, url, content_path, no
   schedule, enabled); a known one gets url and content_path changed when
   they differ (nothing is recorded when they do not);
2. a sync is ordered, the same operation as POST /api/sources/<id>/sync
   (an order already waiting or running is not doubled: "already_queued");
3. only after both are committed is the message acknowledged.

Outcomes:
- invalid (not JSON, not an object, a missing or bad field, a disabled
  source): nothing is recorded (a disabled source is refused before its url
  or content_path could change, in the same decision that would change
  them), and the message is rejected without requeue, so that the broker dead-letters it when
  the queue has a dead-letter exchange (a RabbitMQ policy), and logged with
  the API's error code (`invalid_json`, `missing_field`, `invalid_source_id`,
  `invalid_url`, `invalid_content_path`, `validation_failed`,
  `source_disabled`); the bridge goes on with the next message;
- CouchDB unavailable (no answer, a 5xx), contended (a lost race: 409,
  ConcurrencyError) or refusing the bridge's own credentials (401/403, which
  every message would meet until an operator fixes them): the error
  propagates, the bridge drops its connection and reconnects later; the
  unacknowledged message is redelivered then (a redelivery changes nothing
  that was committed: adding and changing are idempotent and an open order
  is not doubled);
- any other CouchDB error (a 400, 404, 413…: the same message would meet it
  again on every delivery) and any other error (a bug): logged and rejected,
  so that one poison message never circles the queue forever nor crashes the
  bridge.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.errors import (
    ApiError,
    InvalidJsonError,
    InvalidSourceIdError,
    MissingFieldError,
    SourceDisabledError,
    SourceExistsError,
    SourceNotFoundError,
    ValidationFailedError,
)
from app.ids import MAX_SAFE_INT
from app.sources import aggregate, checks, orders
from app.sources.aggregate import SourceSpec
from app.store.commit import commit
from app.store.couch import (
    CouchError,
    CouchUnavailableError,
    Database,
    DocumentConflictError,
    UnauthorizedError,
)
from app.store.events import ConcurrencyError, Decision, Doc
from app.timeutil import utcnow

log = logging.getLogger(__name__)

ACTOR = "amqp"  # who the log says added, changed and ordered
ORDERED_BY = "amqp"  # the `by` of the `queued` event (the API's is "admin")
MAX_BODY_BYTES = 64 * 1024
# Errors after which the same message may well succeed later: do not reject it (is_transient).
# A 409 is a lost race and a 401/403 the bridge's own credentials, not the message's fault.
TRANSIENT: tuple[type[BaseException], ...] = (
    CouchUnavailableError,
    ConcurrencyError,
    DocumentConflictError,
    UnauthorizedError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the database's state, not the message's: requeue, never reject.

    Any other CouchDB error (400, 404, 413…) is deterministic: the message
    would fail the same way on every redelivery, so it is dead-lettered.
    """
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, CouchError) and exc.status >= 500


@dataclasses.dataclass(frozen=True)
class SyncOrder:
    """A checked order message."""

    source_id: str
    url: str
    content_path: str


def parse_order(body: bytes) -> SyncOrder:
    """Check an order message; raise the ApiError the sources API would answer with."""
    if len(body) > MAX_BODY_BYTES:
        raise ValidationFailedError(f"An order message is at most {MAX_BODY_BYTES} bytes.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidJsonError("The message body is not UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise ValidationFailedError("The message must be a JSON object.")
    for name in ("source_id", "url", "content_path"):
        if data.get(name) is None:
            raise MissingFieldError(f"The field {name!r} is required.", field=name)
    return SyncOrder(
        source_id=check_wire_source_id(data["source_id"]),
        url=checks.check_source_url(data["url"]),
        content_path=checks.check_content_path(data["content_path"]),
    )


def check_wire_source_id(raw: Any) -> str:
    """The original's database id (a whole number ≥ 0) or one of our slugs, as our slug."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 0 <= raw <= MAX_SAFE_INT:
            raise InvalidSourceIdError(f"source_id {raw} is out of range.", id=str(raw))
        return str(raw)
    return checks.check_source_id(raw)


def apply_order(db: Database, order: SyncOrder, *, now: datetime) -> orders.OrderResult:
    """Add or update the source, then order its sync (each step is idempotent)."""
    ensure_source(db, order, now=now)
    return orders.order_sync(db, order.source_id, by=ORDERED_BY, actor=ACTOR, now=now)


def ensure_source(db: Database, order: SyncOrder, *, now: datetime) -> None:
    """Add the source when unknown; else change url/content_path where they differ.

    A disabled source is refused (SourceDisabledError) before anything is
    recorded: a message that is rejected must change nothing (DESIGN.md
    invariant 6). The refusal is part of the decision itself, so a source
    disabled between our read and our write is refused too.
    """
    stored = db.get_or_none(aggregate.source_doc_id(order.source_id))
    if stored is None:
        try:
            spec = SourceSpec(id=order.source_id, url=order.url, content_path=order.content_path)
            aggregate.add_source(db, spec, actor=ACTOR, now=now)
            log.info("source %s added from an AMQP order", order.source_id)
            return
        except SourceExistsError:  # added meanwhile: change it as any other
            pass
    else:
        check_enabled(stored, order.source_id)
    if change_enabled_source(db, order, now=now):
        log.info("source %s changed by an AMQP order", order.source_id)


def check_enabled(source: Doc, source_id: str) -> None:
    """Raise SourceDisabledError for a disabled source (what order_sync would raise later)."""
    if not source.get("enabled"):
        raise SourceDisabledError(f"Source {source_id!r} is disabled.", id=source_id)


def change_enabled_source(db: Database, order: SyncOrder, *, now: datetime) -> bool:
    """Change url/content_path of an enabled source; whether anything was recorded.

    aggregate.change_source with one more condition in its decision: record
    nothing when the state it decides on is disabled.
    """
    fields = {"url": order.url, "content_path": order.content_path}
    aggregate.check_content_path_free(db, order.source_id, order.content_path)
    decide = unless_disabled(aggregate.changed_decision(fields))
    doc_id = aggregate.source_doc_id(order.source_id)
    [outcome] = commit(db, [(doc_id, decide)], actor=ACTOR, now=now)
    if outcome.state is None:
        raise SourceNotFoundError(f"No source has id {order.source_id!r}.", id=order.source_id)
    if not outcome.recorded:
        check_enabled(outcome.state, order.source_id)
    return outcome.recorded


def unless_disabled(decide: Decision) -> Decision:
    """`decide`, except that a disabled source gets nothing recorded."""

    def guarded(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None and not state.get("enabled"):
            return None
        return decide(state)

    return guarded


class OrderConsumer:
    """The pika callback for the orders queue: apply, then ack; reject what is invalid."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db, self.clock = db, clock
        self.applied = 0
        self.rejected = 0

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """Handle one delivery (pika's on_message_callback signature)."""
        message_id = getattr(properties, "message_id", None) or f"#{method.delivery_tag}"
        try:
            order = parse_order(body)
            result = apply_order(self.db, order, now=self.clock())
        except ApiError as exc:
            self._reject(channel, method, message_id, f"{exc.code}: {exc.reason}")
            return
        except CouchError as exc:
            if is_transient(exc):
                raise  # not acked: redelivered after the bridge reconnects
            self._reject(channel, method, message_id, f"CouchDB refused it: {exc}")
            return
        except ConcurrencyError:
            raise  # a lost race: redelivered after the bridge reconnects
        except Exception:  # a bug must not stop the bridge or block the queue
            log.exception("AMQP order %s failed unexpectedly; rejecting it", message_id)
            self._reject(channel, method, message_id, "internal_error")
            return
        channel.basic_ack(delivery_tag=method.delivery_tag)
        self.applied += 1
        log.info("AMQP order %s: source %s %s", message_id, order.source_id, result.status)

    def _reject(self, channel: Any, method: Any, message_id: str, why: str) -> None:
        channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
        self.rejected += 1
        log.warning("AMQP order %s rejected (dead-lettered if configured): %s", message_id, why)
