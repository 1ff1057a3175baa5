"""`distleech amqp bridge`: one process, one connection, publishing and consuming in turn.

Why one process of its own: a broker that is down or slow must never block
the app or the scheduler, and pika's BlockingConnection wants one thread.
The bridge alternates on that thread (Bridge.step): publish one page of the
log (app/amqp/publisher.py), then let pika deliver sync orders to the
consumer (app/amqp/consumer.py) for up to `amqp.poll_seconds` when the log
has nothing more, for no time at all when it has. The same call serves the
connection's heartbeats.

When the broker goes away (a restart, a network cut) or CouchDB does not
answer, the connection is dropped and made again after a backoff
(`amqp.reconnect_seconds`, doubled up to `amqp.reconnect_max_seconds`);
the publisher resumes from its checkpoint and the broker redelivers every
order that was not acknowledged. Any other error (a bug) is logged with its
traceback and met the same way, after the same backoff: a loop that exits
on it would only be started again by `distleech run` to meet it again. The
bridge only stops on SIGINT/SIGTERM.

Queues: the three published queues and the orders queue are declared
durable, without arguments, so that a dead-letter exchange is a RabbitMQ
policy (`rabbitmqctl set_policy … '{"dead-letter-exchange": "…"}'`), not
something the bridge and the original's neighbours could disagree on. A
queue that exists already with other properties (declared non-durable by a
neighbour) is used as it is, with a warning.

Credentials come only from DISTLEECH_AMQP__USERNAME / __PASSWORD; a URL
with user:password@ is refused, and nothing logged carries the password.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions

from app.amqp.consumer import OrderConsumer
from app.amqp.mapping import PUBLISHED_QUEUES, SYNC_ORDERS
from app.amqp.publisher import Publisher, PublishResult
from app.config import AmqpSettings, ConfigError
from app.errors import redact_credentials
from app.store.couch import CouchError, Database
from app.store.events import ConcurrencyError
from app.timeutil import utcnow

log = logging.getLogger(__name__)

# pika's own errors (connection refused or lost, channel closed, nack, unroutable) and
# socket errors: the broker is away or refused something; reconnect after a backoff.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (CouchError, ConcurrencyError)
PRECONDITION_FAILED = 406


def check_settings(settings: AmqpSettings) -> None:
    """Refuse a URL that is not amqp(s):// or that carries credentials (env only)."""
    parts = urlsplit(settings.url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"amqp.url must be amqp://host[:port]/<vhost>, not {shown_url(settings)}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "amqp.url must not carry credentials: set DISTLEECH_AMQP__USERNAME and"
            " DISTLEECH_AMQP__PASSWORD in the environment"
        )


def shown_url(settings: AmqpSettings) -> str:
    """The broker URL as it may be printed."""
    return redact_credentials(settings.url, settings.password)


def masked(text: str, settings: AmqpSettings) -> str:
    """Any text (an exception's) without the password or a URL's user:password@."""
    return redact_credentials(text, settings.password)


def connection_parameters(settings: AmqpSettings) -> pika.URLParameters:
    """pika's parameters: the URL, the environment's credentials, short timeouts."""
    check_settings(settings)
    params = pika.URLParameters(settings.url)
    if settings.username:
        params.credentials = pika.PlainCredentials(settings.username, settings.password)
    params.connection_attempts = 1  # the bridge's own loop retries, with its backoff
    params.socket_timeout = 10
    params.blocked_connection_timeout = 60  # a broker out of disk or memory: reconnect
    return params


def declare_queues(connection: Any) -> None:
    """Declare the four original queues durable (each on a channel of its own)."""
    for name in (*PUBLISHED_QUEUES, SYNC_ORDERS):
        channel = connection.channel()
        try:
            channel.queue_declare(queue=name, durable=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            log.warning("queue %s exists with other properties (%s); using it", name, exc)
            channel = connection.channel()
            channel.queue_declare(queue=name, passive=True)  # it exists: use it as it is
        channel.close()


class Bridge:
    """The publisher and the consumer on one live connection."""

    def __init__(
        self,
        db: Database,
        connection: Any,
        settings: AmqpSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.connection = connection
        declare_queues(connection)
        self.publisher = Publisher(
            db,
            connection.channel(),
            batch=settings.batch,
            from_start=settings.from_start,
            clock=clock,
        )
        self.consumer = OrderConsumer(db, clock=clock)
        orders = connection.channel()
        orders.basic_qos(prefetch_count=max(1, settings.prefetch))
        orders.basic_consume(queue=SYNC_ORDERS, on_message_callback=self.consumer.on_message)

    def step(self, wait_seconds: float) -> PublishResult:
        """Publish one page; then serve orders (and heartbeats) for up to `wait_seconds`.

        No wait while more of the log is waiting: orders are served between pages.
        """
        result = self.publisher.publish_pending()
        self.connection.process_data_events(time_limit=0 if result.more else wait_seconds)
        return result


def connect(settings: AmqpSettings) -> Any:
    """A blocking connection to the broker (raises pika's errors)."""
    return pika.BlockingConnection(connection_parameters(settings))


def close_quietly(connection: Any) -> None:
    """Close a connection that may be broken already."""
    with contextlib.suppress(Exception):
        if connection.is_open:
            connection.close()


class Backoff:
    """Waits between reconnections: doubling from `first` up to `most`."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, max(first, most)
        self.current = first

    def next(self) -> float:
        """The wait now; the next one is twice as long (at most `most`)."""
        wait = self.current
        self.current = min(self.most, self.current * 2)
        return wait

    def reset(self) -> None:
        self.current = self.first


def run_bridge(
    db: Database,
    settings: AmqpSettings,
    stop: threading.Event,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Bridge until `stop` is set, reconnecting with a backoff whenever something fails."""
    check_settings(settings)
    backoff = Backoff(settings.reconnect_seconds, settings.reconnect_max_seconds)
    while not stop.is_set():
        try:
            _bridge_while_connected(db, settings, stop, backoff, clock)
        except BROKER_ERRORS as exc:
            why = f"the AMQP broker at {shown_url(settings)}: {type(exc).__name__} {exc}"
            _say_waiting(masked(why, settings), backoff, stop)
        except DATABASE_ERRORS as exc:
            _say_waiting(masked(f"CouchDB: {type(exc).__name__} {exc}", settings), backoff, stop)
        except Exception as exc:  # a bug: say where, wait, try again (never exit on it)
            trace = "".join(traceback.format_exception(exc)).rstrip()
            log.error("AMQP bridge failed unexpectedly:\n%s", masked(trace, settings))
            _say_waiting(masked(f"{type(exc).__name__} {exc}", settings), backoff, stop)


def _bridge_while_connected(
    db: Database,
    settings: AmqpSettings,
    stop: threading.Event,
    backoff: Backoff,
    clock: Callable[[], datetime],
) -> None:
    connection = connect(settings)
    try:
        bridge = Bridge(db, connection, settings, clock=clock)
        log.info("AMQP bridge connected to %s", shown_url(settings))
        while not stop.is_set():
            bridge.step(settings.poll_seconds)
            backoff.reset()  # a working connection: the next failure waits briefly again
    finally:
        close_quietly(connection)


def _say_waiting(why: str, backoff: Backoff, stop: threading.Event) -> None:
    wait = backoff.next()
    log.warning("AMQP bridge: %s; reconnecting in %.1f s", why, wait)
    stop.wait(wait)
