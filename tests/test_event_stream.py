"""GET /api/events: the event log as server-sent events, over real HTTP.

The app is served by werkzeug's threaded server (tests/browser.py `serving`)
and read with requests' streaming, as a consumer would: a reconnect with
Last-Event-ID misses nothing and sees nothing twice, filters keep only what
was asked for, heartbeats flow while nothing happens, and a response ends by
itself so that it never holds a server thread for good.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from browser import serving
from conftest import token_header

from app.accounts.auth import issue_token, revoke_token
from app.queues.albums import import_albums, lease_albums
from app.queues.leasing import QueueLeaser
from app.store.events import event_log

STREAM_SETTINGS = {"heartbeat_seconds": 0.2, "retry_seconds": 0.1, "stream_max_seconds": 20}
HANG_GUARD = 10  # seconds: only ends a test that would otherwise hang, never a measure
END = ": this response ends here; reconnect with Last-Event-ID to resume"
REVOKED = ": the credential was revoked or changed; this response ends"


@pytest.fixture
def stream_app(make_app):
    return make_app(events=STREAM_SETTINGS)


@pytest.fixture
def live(stream_app):
    with serving(stream_app) as url:
        yield url


@pytest.fixture
def reader_token(db, clock):
    return issue_token(db, "reader-1", "reader", actor="test", now=clock())


def log_events(db):
    """Every event id in the log, in the log's order (what a consumer must see)."""
    feed = event_log(db).changes(filter="log/events", since=0)
    return [row["id"] for row in feed["results"]]


class Sse:
    """A minimal SSE reader: messages with data, every id seen, comments, the retry."""

    def __init__(self, response):
        self.response = response
        self.lines = response.iter_lines(chunk_size=1, decode_unicode=True)
        self.last_id = None
        self.comments = []
        self.retry = None

    def next_message(self):
        """The next message that carries data, or None when the response ended."""
        fields = {}
        for line in self.lines:
            if line == "":
                if "id" in fields:
                    self.last_id = fields["id"]
                if "data" in fields:
                    return fields
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retry = int(value)
                else:
                    fields[name] = value
        return None

    def take(self, count):
        messages = []
        while len(messages) < count and (message := self.next_message()) is not None:
            messages.append(message)
        return messages

    def rest(self):
        messages = []
        while (message := self.next_message()) is not None:
            messages.append(message)
        return messages


def open_stream(url, headers, **params):
    response = requests.get(
        f"{url}/api/events", headers=headers, params=params, stream=True, timeout=HANG_GUARD
    )
    return response


def read_until_heartbeats(stream, count):
    """Read lines until `count` heartbeats came; return the lines read before the last one."""
    lines, heartbeats = [], 0
    for line in stream.lines:
        if line == ": heartbeat":
            heartbeats += 1
            if heartbeats == count:
                return lines
        lines.append(line)
    raise AssertionError(f"the stream ended after {heartbeats} heartbeats: {lines}")


def make_tokens(db, clock, count, prefix="w"):
    for i in range(count):
        issue_token(db, f"{prefix}{i}", "worker", actor="test", now=clock())


def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(
    live, db, clock, reader_token
):
    # ten facts in the log before anyone listens (the reader's own token is one more)
    make_tokens(db, clock, 10)
    headers = token_header(reader_token)
    # the first connection takes four events and drops
    with open_stream(live, headers) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = Sse(response)
        first = stream.take(4)
        assert stream.retry == 100  # retry: from events.retry_seconds
        resume_at = stream.last_id
    # the second resumes where the first stopped, and sees facts recorded while it listens
    later = threading.Timer(0.5, make_tokens, args=(db, clock, 3, "late"))
    later.start()
    with open_stream(live, {**headers, "Last-Event-ID": resume_at}, max_seconds=2) as response:
        stream = Sse(response)
        second = stream.rest()
    later.join()
    seen = [json.loads(m["data"])["_id"] for m in first + second]
    assert seen == log_events(db)  # in log order, nothing missed, nothing twice
    assert len(seen) == 14
    assert all(m["event"] == "fact" for m in first + second)
    event = json.loads(second[-1]["data"])
    assert "_rev" not in event and event["type"] == "event" and event["changes"]


def test_limit_ends_the_response_and_since_resumes(live, db, clock, reader_token):
    make_tokens(db, clock, 5)
    headers = token_header(reader_token)
    with open_stream(live, headers, limit=2) as response:
        stream = Sse(response)
        first = stream.rest()  # the response ends after two events
    with open_stream(live, headers, since=first[-1]["id"], max_seconds=0.5) as response:
        second = Sse(response).rest()
    ids = [json.loads(m["data"])["_id"] for m in first + second]
    assert len(first) == 2 and ids == log_events(db)


def test_filters_by_aggregate_type_and_event_name(live, db, clock, reader_token):
    # an import (album imported), a lease (album leased), tokens (token issued)
    import_albums(
        db, [(2, "Joni Mitchell", "Blue"), (3, "Nina Simone", "Pastel")], actor="op", now=clock()
    )
    lease_albums(QueueLeaser(db), "worker-1", 1, clock(), 60)
    make_tokens(db, clock, 2)
    headers = token_header(reader_token)
    with open_stream(live, headers, type="album", name="leased", max_seconds=0.5) as response:
        stream = Sse(response)
        leased = stream.rest()
        skipped_to = stream.last_id
    events = [json.loads(m["data"]) for m in leased]
    assert [e["name"] for e in events] == ["leased"]
    assert all(c["aggregate"].startswith("album:") for c in events[0]["changes"])
    # the id moved past the rows the filter skipped: a reconnect does not read them again
    assert skipped_to == str(event_log(db).info()["update_seq"])
    with open_stream(live, headers, type="token", max_seconds=0.5) as response:
        tokens = [json.loads(m["data"]) for m in Sse(response).rest()]
    assert {e["changes"][0]["name"] for e in tokens} == {"issued"} and len(tokens) == 3


def test_heartbeats_flow_while_nothing_happens(live, reader_token):
    # a configured heartbeat of 0.2 s; the response could last 20 s: three heartbeats come
    # while no event does (the read timeout is only a hang guard)
    with open_stream(live, token_header(reader_token), since="now") as response:
        lines = read_until_heartbeats(Sse(response), 3)
    assert not [line for line in lines if line.startswith("data:")]
    # `now` resolved to a real position the client keeps
    assert [line for line in lines if line.startswith("id: ")][0] != "id: now"


def test_a_response_ends_by_itself(live, reader_token):
    with open_stream(live, token_header(reader_token), since="now", max_seconds=0.5) as response:
        stream = Sse(response)
        assert stream.rest() == []
    assert stream.comments[-1] == END
    assert stream.last_id is not None


def test_a_revoked_reader_token_ends_its_open_stream(make_app, db, clock, reader_token):
    app = make_app(events=STREAM_SETTINGS, auth={"credential_cache_seconds": 0.2})
    headers = token_header(reader_token)
    with serving(app) as url:
        with open_stream(url, headers, since="now", max_seconds=HANG_GUARD) as response:
            stream = Sse(response)
            read_until_heartbeats(stream, 1)  # listening
            revoke_token(db, "reader-1", actor="test", now=clock())
            # the stream ends once the cached verdict expires, well before max_seconds
            # (the revocation itself may still be sent: it happened within the cache time)
            stream.rest()
        assert stream.comments[-1] == REVOKED
        again = open_stream(url, headers)
        assert again.status_code == 401 and again.json()["error"] == "invalid_credentials"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ("worker", 403, "forbidden"),
        ("anonymous", 401, "authentication_required"),
        ("queuer", 403, "forbidden"),
    ],
)
def test_who_may_follow_the_stream(client, worker_token, queuer_token, headers, status, code):
    sent = {"worker": token_header(worker_token), "queuer": token_header(queuer_token)}
    response = client.get("/api/events", headers=sent.get(headers, {}))
    assert response.status_code == status and response.get_json()["error"] == code


def test_readers_and_admins_may_follow_the_stream(live, reader_token, admin_auth):
    for headers in (token_header(reader_token), admin_auth):
        with open_stream(live, headers, max_seconds=0.3) as response:
            assert response.status_code == 200
            Sse(response).rest()


def test_reader_tokens_are_issued_over_the_api(client, admin_auth):
    made = client.post("/api/tokens", json={"name": "dash", "role": "reader"}, headers=admin_auth)
    assert made.status_code == 201 and made.get_json()["role"] == "reader"
    reader = token_header(made.get_json()["token"])
    assert client.get("/api/tokens", headers=reader).status_code == 403  # nothing else


@pytest.mark.parametrize(
    ("params", "headers", "code"),
    [
        ({"since": "not a seq!"}, {}, "invalid_event_id"),
        ({}, {"Last-Event-ID": "x" * 5000}, "invalid_event_id"),
        ({"type": "no spaces"}, {}, "validation_failed"),
        ({"max_seconds": "-1"}, {}, "validation_failed"),
        ({"limit": "many"}, {}, "validation_failed"),
    ],
)
def test_bad_stream_requests_are_400(client, reader_token, params, headers, code):
    response = client.get(
        "/api/events", query_string=params, headers={**token_header(reader_token), **headers}
    )
    assert response.status_code == 400 and response.get_json()["error"] == code


def test_streams_per_process_are_bounded(make_app, reader_token):
    app = make_app(events={**STREAM_SETTINGS, "max_streams": 1})
    client = app.test_client()
    headers = token_header(reader_token)
    # the first response is open (its body not read yet): it holds the one slot
    first = client.get("/api/events", headers=headers)
    assert first.status_code == 200
    refused = client.get("/api/events", headers=headers)
    assert refused.status_code == 503 and refused.get_json()["error"] == "too_many_streams"
    assert refused.headers["Retry-After"]
    # closed (what the server does when its client goes away): the slot is free again
    first.close()
    again = client.get("/api/events", headers=headers, query_string={"max_seconds": "0.2"})
    assert again.status_code == 200
    again.close()
