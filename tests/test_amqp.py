"""The AMQP bridge against a real RabbitMQ (tests/rabbitmq.py): the original's messages
out, its sync orders in, a broker restart in the middle of a stream."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import START

from app.amqp import bridge as bridge_module
from app.amqp import consumer as consumer_module
from app.amqp.bridge import Bridge, run_bridge
from app.amqp.consumer import OrderConsumer, parse_order
from app.amqp.mapping import (
    FILE_DOWNLOAD_SKIPPED,
    FILE_DOWNLOADED,
    PUBLISHED_QUEUES,
    SOURCE_SYNCHRONIZED,
    SYNC_ORDERS,
    messages_of,
    wire_source_id,
)
from app.amqp.publisher import CHECKPOINT_ID, Publisher
from app.config import AmqpSettings, load_settings
from app.errors import ApiError
from app.sources import aggregate, files, orders
from app.sources.aggregate import SourceSpec
from app.sources.files import FileReport
from app.store.couch import CouchError, CouchUnavailableError, DocumentConflictError
from app.store.events import ConcurrencyError, event_log
from app.stream.feed import current_seq, read_batch

SHA = "ab" * 32
DEAD = "distleech-test-dead-letters"
DEADLINE = 60.0


# ---------------------------------------------------------------- helpers


@pytest.fixture
def settings(rabbitmq):
    return AmqpSettings(
        enabled=True,
        url=rabbitmq.url,
        username=rabbitmq.username,
        password=rabbitmq.password,
        batch=2,
        poll_seconds=0.05,
        reconnect_seconds=0.05,
        reconnect_max_seconds=0.5,
    )


@pytest.fixture
def broker(rabbitmq):
    """The session broker with the original queues (and ours) empty before each test."""
    connection = rabbitmq.connect()
    channel = connection.channel()
    for queue in (*PUBLISHED_QUEUES, SYNC_ORDERS, DEAD):
        channel.queue_delete(queue=queue)
    connection.close()
    yield rabbitmq


@pytest.fixture
def bridge(db, broker, settings):
    """A Bridge on a live connection; the test calls its step directly."""
    connection = bridge_module.connect(settings)
    yield Bridge(db, connection, settings)
    bridge_module.close_quietly(connection)


def wait_for(condition, what: str, deadline: float = DEADLINE):
    """Poll until condition() is truthy (no wall-time assertion: the deadline is a safety net)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def step_until(bridge, condition, what: str):
    """Run the bridge's steps (publish a page, serve orders briefly) until condition()."""

    def stepped():
        bridge.step(0.02)
        return condition()

    return wait_for(stepped, what)


def drain(rabbitmq, queue: str) -> list[tuple[str, dict, object]]:
    """Consume a queue to its end as a consumer that acknowledges: (message_id, body, props)."""
    connection = rabbitmq.connect()
    channel = connection.channel()
    got = []
    while True:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            break
        try:
            decoded = json.loads(body)
        except ValueError:  # a dead-lettered order that was not JSON
            decoded = body
        got.append((properties.message_id, decoded, properties))
        channel.basic_ack(method.delivery_tag)
    connection.close()
    return got


def queue_length(rabbitmq, queue: str) -> int:
    connection = rabbitmq.connect()
    count = connection.channel().queue_declare(queue=queue, passive=True).method.message_count
    connection.close()
    return count


def send_order(rabbitmq, body: bytes | dict, message_id: str | None = None) -> None:
    import pika

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = rabbitmq.connect()
    channel = connection.channel()
    channel.queue_declare(queue=SYNC_ORDERS, durable=True)
    properties = pika.BasicProperties(delivery_mode=2, message_id=message_id)
    channel.basic_publish("", SYNC_ORDERS, raw, properties)
    connection.close()


def expected_messages(db) -> list:
    """Every message the whole log maps to, in log order."""
    found, since = [], "0"
    while True:
        page = read_batch(db, since, 500)
        found += [m for _, event in page.rows for m in messages_of(event)]
        if not page.full:
            return found
        since = page.last_seq


def entry(filename: str, status: str) -> dict:
    return {"filename": filename, "status": status, "size": 1, "sha256": SHA}


def add_with_order(db, source_id="725"):
    spec = SourceSpec(id=source_id, url="https://example.org/c/1", content_path="portraits")
    aggregate.add_source(db, spec, actor="op", now=START)
    orders.order_sync(db, source_id, by="admin", actor="op", now=START)


def record(db, names, status="downloaded", source_id="725"):
    reports = [FileReport(name, status, 1, SHA) for name in names]
    files.record_files(db, source_id, f"{source_id}.1", reports, actor="w", now=START)


def synchronised(db, source_id="725"):
    result = orders.SyncResult(source_id, 1, "synchronised", "op", any_round=True)
    orders.report_result(db, result, now=START, max_attempts=3)


# ---------------------------------------------------------------- the mapping


def test_each_event_maps_to_the_original_json_with_a_stable_id():
    event = {
        "_id": "ev:20260101T120000.000000Z:alpha:00112233aabbccdd",
        "at": "2026-01-01T12:00:00Z",
        "changes": [
            {"aggregate": "sourcefile:725:1", "name": "downloaded",
             "data": {"source_id": "725", "filename": "6miu5n4ybt3.jpg", "size": 1}},
            {"aggregate": "sourcefile:725:2", "name": "download_skipped",
             "data": {"source_id": "725", "filename": "b.jpg"}},
            {"aggregate": "sourcefile:725:3", "name": "reported_missing",
             "data": {"source_id": "725", "filename": "c.jpg"}},
            {"aggregate": "syncorder:725", "name": "synchronised",
             "data": {"source_id": "725", "round": 1}},
            {"aggregate": "syncorder:725", "name": "synchronised",
             "data": {"source_id": "725", "round": 1, "ignored": "stale"}},
            {"aggregate": "source:725", "name": "added", "data": {"id": "725"}},
        ],
    }  # fmt: skip
    got = [(m.queue, m.encoded(), m.message_id) for m in messages_of(event)]
    assert got == [
        (
            FILE_DOWNLOADED,
            b'{"source_id": 725, "filename": "6miu5n4ybt3.jpg"}',
            f"{event['_id']}#0",
        ),
        (FILE_DOWNLOAD_SKIPPED, b'{"source_id": 725, "filename": "b.jpg"}', f"{event['_id']}#1"),
        (SOURCE_SYNCHRONIZED, b'{"source_id": 725}', f"{event['_id']}#3"),
    ]
    assert [m.message_id for m in messages_of(event)] == [g[2] for g in got]  # stable


@pytest.mark.parametrize(
    "ours, wire",
    [("725", 725), ("0", 0), ("0725", "0725"), ("gallery", "gallery"), ("9" * 17, "9" * 17)],
)
def test_a_numeric_slug_is_the_originals_number(ours, wire):
    assert wire_source_id(ours) == wire


@pytest.mark.parametrize(
    "body, code",
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1]", "validation_failed"),
        (b'{"url": "https://e.org/", "content_path": "p"}', "missing_field"),
        (b'{"source_id": 1, "content_path": "p"}', "missing_field"),
        (b'{"source_id": true, "url": "https://e.org/", "content_path": "p"}', "invalid_source_id"),
        (b'{"source_id": -1, "url": "https://e.org/", "content_path": "p"}', "invalid_source_id"),
        (b'{"source_id": "A:", "url": "https://e.org/", "content_path": "p"}', "invalid_source_id"),
        (b'{"source_id": 1, "url": "ftp://e.org/", "content_path": "p"}', "invalid_url"),
        (b'{"source_id": 1, "url": "https://e.org/", "content_path": "../up"}',
         "invalid_content_path"),
    ],
)  # fmt: skip
def test_bad_order_messages_are_refused_with_the_apis_codes(body, code):
    with pytest.raises(ApiError) as caught:
        parse_order(body)
    assert caught.value.code == code


def test_the_originals_order_message_is_accepted():
    body = b'{"source_id": 1, "url": "https://unsplash.com/c/7/portraits", "content_path": "p/"}'
    order = parse_order(body)
    assert (order.source_id, order.content_path) == ("1", "p")


@pytest.mark.parametrize(
    "change",
    [
        {"aggregate": "sourcefile:1:1", "name": "downloaded", "data": {}},
        {"aggregate": "sourcefile:1:1", "name": "downloaded", "data": {"source_id": "1"}},
        {"aggregate": "sourcefile:1:1", "name": "download_skipped",
         "data": {"source_id": "1", "filename": 7}},
        {"aggregate": "sourcefile:1:1", "name": "downloaded", "data": {"filename": "a.jpg"}},
        {"aggregate": "sourcefile:1:1", "name": "downloaded", "data": None},
        {"aggregate": "syncorder:1", "name": "synchronised", "data": {"round": 1}},
    ],
)  # fmt: skip
def test_a_malformed_change_is_skipped_and_reported_not_raised(change, caplog):
    # the validator lets these into the log (and another site's may replicate them):
    # raising here stopped the publisher at this event after every restart
    event = {"_id": "ev:x", "at": "2026-01-01T00:00:00Z", "changes": [change, "not a change"]}
    skipped: list[str] = []
    with caplog.at_level(logging.WARNING, logger="app.amqp"):
        assert list(messages_of(event, skipped.append)) == []
    assert skipped == ["ev:x#0"] and "ev:x#0" in caplog.text


class FakePublishChannel:
    """A confirming channel that takes every message (for the publisher without a broker)."""

    def __init__(self):
        self.published = []

    def confirm_delivery(self):
        pass

    def basic_publish(self, exchange, routing_key, body, properties, mandatory):
        self.published.append((routing_key, body))


def test_the_publisher_passes_a_malformed_event_and_counts_it(db):
    bad = {"aggregate": "sourcefile:1:1", "name": "downloaded", "version": 1, "data": {}}
    event_log(db).put(
        {"_id": "ev:20260101T000000.000000Z:alpha:0000000000000001", "type": "event",
         "name": "files", "at": "2026-01-01T00:00:00Z", "actor": "w", "site": "alpha",
         "changes": [bad]}
    )  # fmt: skip
    add_with_order(db, "5")
    record(db, ["a.jpg"], source_id="5")
    channel = FakePublishChannel()
    publisher = Publisher(db, channel, batch=100, from_start=True)
    publisher.publish_pending()
    assert channel.published == [(FILE_DOWNLOADED, b'{"source_id": 5, "filename": "a.jpg"}')]
    checkpoint = db.get(CHECKPOINT_ID)
    assert (checkpoint["published"], checkpoint["skipped"]) == (1, 1)


# ---------------------------------------------------------------- publishing


def test_a_sync_through_the_api_publishes_the_originals_messages_in_order(
    client, db, admin_auth, worker, bridge, broker
):
    # an admin adds source 725 and orders a sync; a worker leases it and reports files
    source = {"id": "725", "url": "https://example.org/c/1", "content_path": "portraits/"}
    assert client.post("/api/sources", json=source, headers=admin_auth).status_code == 201
    assert client.post("/api/sources/725/sync", headers=admin_auth).status_code == 202
    order = client.get("/api/sources/next", headers=worker).get_json()["order"]
    entries = [
        entry("a.jpg", "downloaded"),
        entry("b.jpg", "skipped"),
        entry("c.jpg", "downloaded"),
    ]
    body = {"order": order, "files": entries}
    assert client.post("/api/sources/725/files", json=body, headers=worker).status_code == 200
    more = [entry("d/e.jpg", "downloaded"), {"filename": "x", "status": "deleted"}]
    body = {"order": order, "files": more}
    assert client.post("/api/sources/725/files", json=body, headers=worker).status_code == 200
    done = {"order": order, "status": "synchronised"}
    assert (
        client.post("/api/sources/725/synchronised", json=done, headers=worker).status_code == 200
    )

    # the bridge publishes until the log has nothing more; a further step publishes nothing
    while bridge.step(0).more:
        pass
    assert bridge.step(0).published == 0

    downloaded = drain(broker, FILE_DOWNLOADED)
    assert [body for _, body, _ in downloaded] == [
        {"source_id": 725, "filename": "a.jpg"},
        {"source_id": 725, "filename": "c.jpg"},
        {"source_id": 725, "filename": "d/e.jpg"},
    ]
    assert [body for _, body, _ in drain(broker, FILE_DOWNLOAD_SKIPPED)] == [
        {"source_id": 725, "filename": "b.jpg"}
    ]
    [(message_id, body, props)] = drain(broker, SOURCE_SYNCHRONIZED)
    assert body == {"source_id": 725}
    assert (props.delivery_mode, props.content_type) == (2, "application/json")
    assert message_id.startswith("ev:") and "#" in message_id
    assert len({m for m, _, _ in downloaded} | {message_id}) == 4
    assert db.get(CHECKPOINT_ID)["seq"] == current_seq(db)


def test_a_bridge_started_with_from_start_false_publishes_only_what_follows(db, broker, settings):
    add_with_order(db)
    record(db, ["old.jpg"])
    connection = bridge_module.connect(settings)
    try:
        bridge_module.declare_queues(connection)
        publisher = Publisher(db, connection.channel(), batch=10, from_start=False)
        record(db, ["new.jpg"])
        assert publisher.publish_pending().published == 1
    finally:
        connection.close()
    assert [body["filename"] for _, body, _ in drain(broker, FILE_DOWNLOADED)] == ["new.jpg"]


# ---------------------------------------------------------------- consuming orders


class FakeOrderChannel:
    """What the consumer calls on pika's channel: acks and rejects, recorded."""

    def __init__(self):
        self.acks, self.rejects = [], []

    def basic_ack(self, delivery_tag):
        self.acks.append(delivery_tag)

    def basic_reject(self, delivery_tag, requeue):
        self.rejects.append((delivery_tag, requeue))


class Delivery:
    delivery_tag = 1


def deliver(db, body: bytes) -> FakeOrderChannel:
    channel = FakeOrderChannel()
    OrderConsumer(db, clock=lambda: START).on_message(channel, Delivery(), None, body)
    return channel


def test_an_order_for_a_disabled_source_is_rejected_and_changes_nothing(db):
    spec = SourceSpec(id="9", url="https://e.org/old", content_path="p", enabled=False)
    aggregate.add_source(db, spec, actor="op", now=START)
    before = [e["_id"] for _, e in read_batch(db, "0", 100).rows]
    body = b'{"source_id": 9, "url": "https://other.example/new", "content_path": "other"}'
    assert deliver(db, body).rejects == [(1, False)]  # source_disabled: dead-lettered
    source = aggregate.get_source(db, "9")
    assert (source["url"], source["content_path"]) == ("https://e.org/old", "p")
    assert [e["_id"] for _, e in read_batch(db, "0", 100).rows] == before  # nothing recorded


def test_a_source_disabled_after_the_read_is_refused_by_the_decision(db):
    spec = SourceSpec(id="9", url="https://e.org/old", content_path="p")
    aggregate.add_source(db, spec, actor="op", now=START)
    orders.set_enabled(db, "9", False, actor="op", now=START)
    order = parse_order(b'{"source_id": 9, "url": "https://e.org/new", "content_path": "p"}')
    with pytest.raises(ApiError) as caught:  # skipping the first check: the decision refuses
        consumer_module.change_enabled_source(db, order, now=START)
    assert caught.value.code == "source_disabled"
    assert aggregate.get_source(db, "9")["url"] == "https://e.org/old"


@pytest.mark.parametrize(
    "error, transient",
    [
        (CouchError(400, "bad_request", "invalid UTF-8 JSON"), False),
        (CouchError(413, "too_large", "document too large"), False),
        (CouchError(404, "not_found", "missing"), False),
        (CouchUnavailableError(503, "unavailable", "down"), True),
        (CouchError(500, "unknown_error", "boom"), True),
        (DocumentConflictError(409, "conflict", "lost a race"), True),
        (ConcurrencyError("kept losing"), True),
    ],
)
def test_only_unavailability_and_races_are_requeued_the_rest_dead_lettered(
    db, monkeypatch, error, transient
):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(consumer_module, "apply_order", failing)
    body = b'{"source_id": 1, "url": "https://e.org/", "content_path": "p"}'
    if transient:  # not acked: the bridge reconnects and the broker redelivers it
        with pytest.raises(type(error)):
            deliver(db, body)
    else:  # the same message would fail the same way forever: dead-letter it
        assert deliver(db, body).rejects == [(1, False)]


def test_an_order_message_adds_then_changes_the_source_and_queues_a_sync(db, bridge, broker):
    send_order(broker, {"source_id": 7, "url": "https://example.org/a", "content_path": "p/"})
    step_until(bridge, lambda: bridge.consumer.applied == 1, "the first order")
    source = aggregate.get_source(db, "7")
    assert (source["url"], source["content_path"], source["enabled"]) == (
        "https://example.org/a",
        "p",
        True,
    )
    order = orders.get_order(db, "7")
    assert (order["state"], order["round"], order["queued_by"]) == ("ready", 1, "amqp")

    # the same source with another url and path: changed; the waiting order is not doubled
    send_order(broker, {"source_id": 7, "url": "https://example.org/b", "content_path": "q"})
    step_until(bridge, lambda: bridge.consumer.applied == 2, "the second order")
    source = aggregate.get_source(db, "7")
    assert (source["url"], source["content_path"]) == ("https://example.org/b", "q")
    assert orders.get_order(db, "7")["round"] == 1
    names = [c["name"] for _, e in read_batch(db, "0", 100).rows for c in e["changes"]]
    assert names == ["added", "queued", "changed"]

    # both were acknowledged: nothing comes back once the bridge's connection is gone
    bridge_module.close_quietly(bridge.connection)
    assert queue_length(broker, SYNC_ORDERS) == 0


def test_invalid_orders_are_dead_lettered_logged_and_the_bridge_goes_on(db, bridge, broker, caplog):
    # a dead-letter exchange is a broker policy, as an operator would set it
    connection = broker.connect()
    channel = connection.channel()
    channel.exchange_declare(exchange=DEAD, exchange_type="fanout", durable=True)
    channel.queue_declare(queue=DEAD, durable=True)
    channel.queue_bind(queue=DEAD, exchange=DEAD)
    connection.close()
    policy = json.dumps({"dead-letter-exchange": DEAD})
    broker.ctl(
        "set_policy", "distleech-test-dlx", f"^{SYNC_ORDERS}$", policy, "--apply-to", "queues"
    )
    try:
        bad = [
            b"not json",
            b"[]",
            b'{"source_id": 1}',
            b'{"source_id": 1, "url": "https://e.org/", "content_path": "../up"}',
        ]
        for number, body in enumerate(bad):
            send_order(broker, body, message_id=f"bad-{number}")
        disabled = SourceSpec(id="9", url="https://e.org/", content_path="p", enabled=False)
        aggregate.add_source(db, disabled, actor="op", now=START)
        send_order(broker, {"source_id": 9, "url": "https://e.org/", "content_path": "p"})
        send_order(broker, {"source_id": 8, "url": "https://e.org/", "content_path": "q"})
        with caplog.at_level(logging.WARNING, logger="app.amqp"):
            step_until(bridge, lambda: bridge.consumer.applied == 1, "the valid order")
        assert bridge.consumer.rejected == 5
        assert orders.get_order(db, "8")["state"] == "ready"
        assert orders.get_order(db, "9") is None
        dead = drain(broker, DEAD)
        assert [m for m, _, _ in dead][:4] == ["bad-0", "bad-1", "bad-2", "bad-3"]
        assert len(dead) == 5
        logged = caplog.text
        for code in ("invalid_json", "validation_failed", "missing_field"):
            assert code in logged
        assert "invalid_content_path" in logged and "source_disabled" in logged
    finally:
        broker.ctl("clear_policy", "distleech-test-dlx")
        connection = broker.connect()
        connection.channel().exchange_delete(exchange=DEAD)
        connection.close()


# ---------------------------------------------------------------- surviving failures


def test_the_bridge_logs_an_unexpected_error_backs_off_and_goes_on(db, monkeypatch, caplog):
    settings = AmqpSettings(
        enabled=True, url="amqp://127.0.0.1:1/%2F", password="s3cr3t",
        reconnect_seconds=0.01, reconnect_max_seconds=0.02,
    )  # fmt: skip
    stop = threading.Event()
    calls = []

    def connected(db, settings, stop_event, backoff, clock):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("filename s3cr3t")  # a bug, not the broker nor CouchDB
        stop_event.set()

    monkeypatch.setattr(bridge_module, "_bridge_while_connected", connected)
    with caplog.at_level(logging.INFO, logger="app.amqp"):
        run_bridge(db, settings, stop)  # returns only because the second round set stop
    assert len(calls) == 2
    assert "Traceback" in caplog.text and "KeyError" in caplog.text
    assert "s3cr3t" not in caplog.text


class FakeProcess:
    def __init__(self, returncode=None):
        self.returncode = returncode
        self.pid = 4242

    def poll(self):
        return self.returncode


def test_distleech_run_restarts_an_exited_bridge_after_a_backoff_and_keeps_the_rest(
    tmp_path, monkeypatch
):
    from app.processes import supervisor

    monkeypatch.setattr(supervisor, "VAR", tmp_path)
    children = {"app": FakeProcess(), "scheduler": FakeProcess(), "amqp": FakeProcess(1)}
    spawned = []

    def spawn():
        spawned.append(FakeProcess())
        return spawned[-1]

    restarters = {"amqp": supervisor.Restarter(first=1.0, most=4.0, started_at=0.0)}
    optional = {"amqp": spawn}
    assert supervisor.watch_step(children, optional, restarters, 10.0) is None  # waits 1 s
    assert spawned == []
    assert supervisor.watch_step(children, optional, restarters, 11.0) is None
    assert children["amqp"] is spawned[0]  # started again; app and scheduler untouched
    spawned[0].returncode = 1  # exits again at once: the next wait is longer
    assert supervisor.watch_step(children, optional, restarters, 11.5) is None
    assert supervisor.watch_step(children, optional, restarters, 12.6) is None
    assert len(spawned) == 1
    assert supervisor.watch_step(children, optional, restarters, 13.5) is None
    assert len(spawned) == 2
    children["scheduler"].returncode = 1  # a required part: everything stops
    assert supervisor.watch_step(children, optional, restarters, 14.0) == 1


def test_distleech_run_refuses_a_bad_amqp_url_before_starting_anything(tmp_path, monkeypatch):
    import click

    from app.processes import supervisor

    monkeypatch.setattr(supervisor, "VAR", tmp_path)
    settings = load_settings(
        {"amqp": {"enabled": True, "url": "http://broker.example/"}}, environ={}
    )
    with pytest.raises(click.ClickException, match="amqp.url"):
        supervisor.run_all(settings)
    assert list(tmp_path.iterdir()) == []  # no run file, no log: nothing was started


# ---------------------------------------------------------------- a broker restart


def test_a_broker_restart_mid_stream_loses_nothing_and_dedupe_sees_each_once(
    db, broker, settings, monkeypatch
):
    add_with_order(db)
    for call in range(6):  # 6 events of 40 files: 240 messages, 2 events a page
        record(db, [f"{call}-{i}.jpg" for i in range(40)], "skipped" if call == 2 else "downloaded")
    restarted = threading.Event()

    class RestartingPublisher(Publisher):
        """Restarts the broker in the middle of the third page, after 100 confirmed sends."""

        sent = 0

        def _publish(self, message):
            RestartingPublisher.sent += 1
            if RestartingPublisher.sent == 101 and not restarted.is_set():
                broker.restart()  # the 20 confirmed sends of this page are not checkpointed
                restarted.set()
            super()._publish(message)

    monkeypatch.setattr(bridge_module, "Publisher", RestartingPublisher)
    stop = threading.Event()
    thread = threading.Thread(target=run_bridge, args=(db, settings, stop), daemon=True)
    thread.start()
    try:
        wait_for(restarted.is_set, "the broker restart")
        # the stream goes on after the restart: more files, then the end of the sync
        for call in range(6, 9):
            record(db, [f"{call}-{i}.jpg" for i in range(40)])
        synchronised(db)
        end = current_seq(db)
        wait_for(lambda: str((db.get_or_none(CHECKPOINT_ID) or {}).get("seq")) == end, "catch-up")
    finally:
        stop.set()
        thread.join(timeout=DEADLINE)
    assert not thread.is_alive()

    expected = expected_messages(db)
    assert len(expected) == 9 * 40 + 1
    sent_twice = 0
    for queue in PUBLISHED_QUEUES:
        raw = drain(broker, queue)
        seen: dict[str, dict] = {}
        for message_id, body, props in raw:
            seen.setdefault(message_id, body)  # the consumer dedupes by message_id
            assert props.delivery_mode == 2
        wanted = [(m.message_id, m.body) for m in expected if m.queue == queue]
        assert list(seen.items()) == wanted  # each once, none lost, in log order
        sent_twice += len(raw) - len(seen)
    # only the confirmed part of the page the restart cut was sent again, with the same ids
    assert sent_twice == 20


# ---------------------------------------------------------------- the process


def run_cli(db, rabbitmq, tmp_path, *args, **env_extra):
    env = {
        **os.environ,
        "DISTLEECH_CONFIG": str(tmp_path / "none.yaml"),
        "DISTLEECH_COUCHDB__URL": db.server_url,
        "DISTLEECH_COUCHDB__DATABASE": db.name,
        "DISTLEECH_AMQP__ENABLED": "true",
        "DISTLEECH_AMQP__URL": rabbitmq.url,
        "DISTLEECH_AMQP__USERNAME": rabbitmq.username,
        "DISTLEECH_AMQP__POLL_SECONDS": "0.1",
        "DISTLEECH_AMQP__RECONNECT_SECONDS": "0.1",
        **env_extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )


def output_until(proc, marker: str) -> str:
    """Read the process's output until a line holds `marker`; then stop it and read the rest."""
    lines = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        lines.append(raw.decode(errors="replace"))
        if marker in lines[-1]:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=DEADLINE)
    return "".join(lines) + rest.decode(errors="replace")


def test_the_bridge_process_never_prints_credentials(db, broker, tmp_path):
    wrong = "wrong-" + broker.password
    proc = run_cli(db, broker, tmp_path, "amqp", "bridge", DISTLEECH_AMQP__PASSWORD=wrong)
    refused = output_until(proc, "reconnecting in")
    assert "ACCESS_REFUSED" in refused or "Authentication" in refused
    assert wrong not in refused and broker.password not in refused

    proc = run_cli(db, broker, tmp_path, "amqp", "bridge", DISTLEECH_AMQP__PASSWORD=broker.password)
    connected = output_until(proc, "AMQP bridge connected")
    assert proc.returncode == 0 and broker.password not in connected

    status = run_cli(db, broker, tmp_path, "amqp", "status", DISTLEECH_AMQP__PASSWORD=wrong)
    out, _ = status.communicate(timeout=DEADLINE)
    assert status.returncode == 0 and json.loads(out)["enabled"] is True
    assert wrong.encode() not in out

    in_url = broker.url.replace("amqp://", "amqp://someone:s3cr3t-in-url@")
    proc = run_cli(db, broker, tmp_path, "amqp", "bridge", DISTLEECH_AMQP__URL=in_url)
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 1 and b"s3cr3t-in-url" not in out
    assert b"must not carry credentials" in out


def test_distleech_run_starts_the_bridge_when_enabled(broker, tmp_path, monkeypatch):
    from run_process import distleech_run

    for key, value in {
        "ENABLED": "true",
        "URL": broker.url,
        "USERNAME": broker.username,
        "PASSWORD": broker.password,
        "POLL_SECONDS": "0.1",
    }.items():
        monkeypatch.setenv(f"DISTLEECH_AMQP__{key}", value)
    log = tmp_path / "var" / "log" / "amqp.log"
    with distleech_run(tmp_path) as run:
        run.wait_for(f"{run.app_url}/metadata/1")
        send_order(broker, {"source_id": 3, "url": "https://e.org/", "content_path": "p"})
        wait_for(lambda: log.exists() and "source 3 queued" in log.read_text(), "the order")
    assert run.process.returncode == 0, run.output
    assert "AMQP bridge:" in run.output
    assert broker.password not in run.output + log.read_text()
