"""Publishing the log's mapped events to the broker, in order, from a checkpoint.

The position in the log lives in the read model's `_local/amqp-publisher`
{seq, published, skipped, last_message, updated_at} (`skipped`: malformed
changes that made no message, app/amqp/mapping.py): a `_local` document never
replicates (each site has its own log sequence) and a rebuild leaves it
alone, as the webhooks' checkpoints (app/stream/webhooks.py).

One step (`Publisher.publish_pending`):
1. read one page of the log after the checkpoint (app/stream/feed.read_batch,
   the same follower as the event stream and the webhooks);
2. publish its messages in log order, each persistent (delivery_mode 2) to
   the durable queue of its original name through the default exchange, as
   `mandatory` (a message no queue takes is an error, never silently
   dropped), on a channel in confirm mode: pika's BlockingChannel returns
   from basic_publish only when the broker has confirmed that message
   (written to disk for a durable queue), and raises when it refused it;
3. only then move the checkpoint past the page.

When a message could still be published twice (the only case):
- the broker goes away (or the bridge dies) after it took a message and
  before the checkpoint write that follows the page's last confirm; the
  next step starts from the old checkpoint and sends that page's messages
  again. At most one page (`amqp.batch` events) is sent twice, with the same
  `message_id`s, in the same order.
- two bridges follow one read model at once (run one per site: `distleech
  run` starts one); the second one's checkpoint write conflicts, it stops
  and re-reads the checkpoint.
Nothing is lost: the checkpoint never moves past a message the broker has
not confirmed. So a consumer that acknowledges and dedupes by message_id
sees each message exactly once, in log order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pika

from app.amqp.mapping import Message, messages_of
from app.store.couch import Database
from app.store.events import Doc
from app.stream.feed import current_seq, read_batch
from app.timeutil import iso, utcnow

log = logging.getLogger(__name__)

CHECKPOINT_ID = "_local/amqp-publisher"
APP_ID = "distleech"


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What one step did: messages confirmed, and whether more of the log is waiting."""

    published: int
    more: bool


def load_checkpoint(db: Database, *, from_start: bool) -> Doc:
    """The stored position, or a new one at the log's start (or its end: `from_start` false).

    A new position at the end is written at once, so that what happens
    between this start and the first page is published after a restart.
    """
    doc = db.get_or_none(CHECKPOINT_ID)
    if doc is not None:
        return doc
    doc = {"_id": CHECKPOINT_ID, "seq": "0", "published": 0, "last_message": None}
    if not from_start:
        doc["seq"] = current_seq(db)
        db.put(doc)
        log.info("no AMQP checkpoint: publishing from the log's current end")
    return doc


def get_status(db: Database) -> dict[str, Any]:
    """Where the publisher is (for `distleech amqp status`)."""
    doc = db.get_or_none(CHECKPOINT_ID) or {}
    return {
        "seq": str(doc.get("seq", "0")),
        "published": doc.get("published", 0),
        "skipped": doc.get("skipped", 0),
        "last_message": doc.get("last_message"),
        "updated_at": doc.get("updated_at"),
        "log_end": current_seq(db),
    }


def properties_of(message: Message) -> pika.BasicProperties:
    """Persistent JSON with the stable id consumers dedupe by."""
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message.message_id,
        app_id=APP_ID,
        timestamp=_epoch_seconds(message.at),
    )


def _epoch_seconds(at: str) -> int | None:
    try:
        return int(datetime.fromisoformat(at).timestamp())
    except ValueError:
        return None


class Publisher:
    """Publishes the log's messages after the checkpoint on one confirming channel."""

    def __init__(
        self,
        db: Database,
        channel: Any,
        *,
        batch: int,
        from_start: bool,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db, self.channel, self.batch, self.clock = db, channel, max(1, batch), clock
        self.channel.confirm_delivery()  # basic_publish now waits for the broker's ack
        self.checkpoint = load_checkpoint(db, from_start=from_start)

    def publish_pending(self) -> PublishResult:
        """Publish one page of the log after the checkpoint, then move the checkpoint.

        Raises pika's errors (connection lost, NackError, UnroutableError) and
        CouchDB's: the checkpoint is then where it was, and the next step sends
        the page again (see the module docstring).
        """
        since = str(self.checkpoint["seq"])
        page = read_batch(self.db, since, self.batch)
        skipped: list[str] = []
        messages = [
            message for _, event in page.rows for message in messages_of(event, skipped.append)
        ]
        for message in messages:
            self._publish(message)
        if page.last_seq != since or messages:
            self._save(page.last_seq, messages, len(skipped))
        return PublishResult(len(messages), page.full)

    def _publish(self, message: Message) -> None:
        self.channel.basic_publish(
            exchange="",
            routing_key=message.queue,
            body=message.encoded(),
            properties=properties_of(message),
            mandatory=True,
        )

    def _save(self, seq: str, messages: list[Message], skipped: int = 0) -> None:
        """Move the checkpoint; a conflict (another bridge) propagates: reload and go on."""
        self.checkpoint["seq"] = seq
        self.checkpoint["published"] = self.checkpoint.get("published", 0) + len(messages)
        self.checkpoint["skipped"] = self.checkpoint.get("skipped", 0) + skipped
        if messages:
            self.checkpoint["last_message"] = messages[-1].message_id
        self.checkpoint["updated_at"] = iso(self.clock())
        self.db.put(self.checkpoint)
        if messages:
            log.info("published %d AMQP messages up to %s", len(messages), seq)
