"""Webhooks: registered by admins, delivered by the scheduler's job to real HTTP receivers.

Each test runs local receivers (http.server in threads) and calls the
delivery job directly with the test clock's `now`, moving the clock past
each backoff by hand: signatures verify with the secret, a receiver that
fails a few times gets every event exactly once and in order, one that
always fails ends in dead letters that redeliver once it is fixed, and a
slow one delays neither the other webhooks nor the app.

The receivers listen on 127.0.0.1, so these apps and settings turn
`events.webhook_allow_private` on; the tests of that rule turn it off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from app.accounts.auth import add_user, issue_token
from app.accounts.credentials import list_secret_documents
from app.cli.main import main
from app.config import EventsSettings
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import event_log
from app.store.projections import rebuild_projections
from app.stream import delivery
from app.stream.delivery import deliver_webhooks
from app.stream.webhooks import checkpoint_id, get_secret, remove_webhook

SETTINGS = EventsSettings(
    webhook_seconds=1,
    webhook_timeout_seconds=0.5,
    webhook_max_attempts=3,
    webhook_backoff_seconds=10,
    webhook_allow_private=True,
)
HANG_GUARD = 10  # seconds: only ends a test that would otherwise hang


@pytest.fixture
def app(make_app):
    """The receivers are local: let webhooks reach 127.0.0.1."""
    return make_app(events={"webhook_allow_private": True})


class Receiver:
    """A local webhook receiver: fails the first `failures` requests (or all), may hold
    each request until `release` is set, may answer a body, may call `on_request` first."""

    def __init__(self, failures=0, always_fail=False, hold=False, body=b"", on_request=None):
        self.failures, self.always_fail, self.body = failures, always_fail, body
        self.on_request = on_request
        self.holding, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        self.attempts = []  # every request: (headers, body)
        self.accepted = []  # the ones answered 2xx
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def answer(self, headers, body):
        if self.on_request is not None:
            self.on_request(headers)
        self.holding.set()
        self.release.wait(HANG_GUARD)
        with self.lock:
            self.attempts.append((headers, body))
            if self.always_fail or len(self.attempts) <= self.failures:
                return 500
            self.accepted.append((headers, body))
            return 204

    def accepted_ids(self):
        return [json.loads(body)["_id"] for _, body in self.accepted]


@pytest.fixture
def receivers():
    started = []

    def start(**behaviour):
        receiver = Receiver(**behaviour)
        thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((receiver, thread))
        return receiver

    yield start
    for receiver, thread in started:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)


def register(client, admin_auth, url, **fields):
    """Register a webhook; by default only for tokens (what record_facts records), so
    that the webhooks' own `registered` events do not count."""
    fields.setdefault("types", ["token"])
    response = client.post("/api/webhooks", json={"url": url, **fields}, headers=admin_auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def record_facts(db, clock, count, prefix="w"):
    """`count` events in the log (each a token issued); their ids in log order."""
    before = {row["id"] for row in event_log(db).changes(since=0)["results"]}
    for i in range(count):
        issue_token(db, f"{prefix}{i}", "worker", actor="test", now=clock())
    feed = event_log(db).changes(since=0, filter="log/events")["results"]
    return [row["id"] for row in feed if row["id"] not in before]


def state_of(client, admin_auth, webhook_id):
    response = client.get(f"/api/webhooks/{webhook_id}", headers=admin_auth)
    assert response.status_code == 200
    return response.get_json()["delivery"]


def test_deliveries_are_signed_with_the_webhook_secret(client, admin_auth, db, clock, receivers):
    receiver = receivers()
    made = register(client, admin_auth, receiver.url)
    events = record_facts(db, clock, 2)
    tally = deliver_webhooks(db, clock(), SETTINGS)
    assert tally.delivered == 2 and receiver.accepted_ids() == events
    for headers, body in receiver.accepted:
        # what a receiver does: HMAC-SHA256 of the exact body with the secret, compared safely
        expected = "sha256=" + hmac.new(made["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Distleech-Signature"], expected)
        event = json.loads(body)
        assert headers["X-Distleech-Event-Id"] == event["_id"] and "_rev" not in event
        assert headers["X-Distleech-Delivery"] and headers["X-Distleech-Webhook"] == made["id"]
        assert headers["Content-Type"] == "application/json"
    state = state_of(client, admin_auth, made["id"])
    assert state["delivered"] == 2 and state["pending"] == 0 and state["pending_exact"]
    assert state["last_delivered_event"] == events[-1]


def test_a_failing_receiver_gets_each_event_once_in_order(client, admin_auth, db, clock, receivers):
    receiver = receivers(failures=2)
    made = register(client, admin_auth, receiver.url)
    events = record_facts(db, clock, 3)
    # first attempt fails: the event waits webhook_backoff_seconds, later events wait behind it
    assert deliver_webhooks(db, clock(), SETTINGS).failed == 1
    state = state_of(client, admin_auth, made["id"])
    assert state["failures"] == 1 and state["pending"] == 3 and "HTTP 500" in state["last_error"]
    assert state["retrying_event"] == events[0] and state["next_attempt_at"]
    # not due yet: nothing is tried
    assert deliver_webhooks(db, clock(), SETTINGS).failed == 0 and len(receiver.attempts) == 1
    # the second attempt after 10 s fails too; the third after 20 more succeeds, then the rest
    clock.advance(seconds=10)
    assert deliver_webhooks(db, clock(), SETTINGS).failed == 1
    clock.advance(seconds=19)
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 0
    clock.advance(seconds=1)
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 3
    assert receiver.accepted_ids() == events
    attempts = [h["X-Distleech-Attempt"] for h, _ in receiver.attempts]
    assert attempts == ["1", "2", "3", "1", "1"]
    # the same delivery id on every attempt of one event: receivers may dedupe on it
    assert len({h["X-Distleech-Delivery"] for h, _ in receiver.attempts[:3]}) == 1
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 0  # nothing twice
    state = state_of(client, admin_auth, made["id"])
    assert (state["delivered"], state["pending"], state["retrying_event"]) == (3, 0, None)


def test_dead_letters_redeliver_once_the_receiver_is_fixed(
    client, admin_auth, db, clock, receivers
):
    receiver = receivers(always_fail=True)
    made = register(client, admin_auth, receiver.url)
    events = record_facts(db, clock, 2)
    # three attempts each (10 s, then 20 s apart), then each becomes a dead letter
    for _ in range(8):
        deliver_webhooks(db, clock(), SETTINGS)
        clock.advance(seconds=40)
    letters = client.get(f"/api/webhooks/{made['id']}/dead-letters", headers=admin_auth)
    dead = letters.get_json()
    assert {d["event"] for d in dead} == set(events) and all(d["attempts"] == 3 for d in dead)
    assert state_of(client, admin_auth, made["id"])["dead_letters"] == 2
    assert len(receiver.attempts) == 6
    # fixed: an admin redelivers one, then all; the job (not the request) makes the calls
    receiver.always_fail = False
    one = client.post(
        f"/api/webhooks/{made['id']}/dead-letters/{dead[0]['delivery']}/redeliver",
        headers=admin_auth,
    )
    assert one.status_code == 202 and one.get_json()["queued"] == [dead[0]["delivery"]]
    assert len(receiver.attempts) == 6
    every = client.post(f"/api/webhooks/{made['id']}/dead-letters/redeliver", headers=admin_auth)
    assert every.status_code == 202 and len(every.get_json()["queued"]) == 2
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 2
    assert sorted(receiver.accepted_ids()) == sorted(events)
    assert (
        client.get(f"/api/webhooks/{made['id']}/dead-letters", headers=admin_auth).get_json() == []
    )
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 0
    missing = client.post(
        f"/api/webhooks/{made['id']}/dead-letters/{dead[0]['delivery']}/redeliver",
        headers=admin_auth,
    )
    assert missing.status_code == 404 and missing.get_json()["error"] == "dead_letter_not_found"


def test_a_slow_receiver_delays_neither_other_webhooks_nor_the_app(
    client, admin_auth, db, clock, receivers
):
    # the slow receiver holds every request until the test lets it go
    slow, fast = receivers(hold=True), receivers()
    slow_hook = register(client, admin_auth, slow.url)
    register(client, admin_auth, fast.url)
    events = record_facts(db, clock, 5)
    done = {}
    job = threading.Thread(
        target=lambda: done.update(tally=deliver_webhooks(db, clock(), SETTINGS))
    )
    job.start()
    # while a delivery is held by the slow receiver, the app answers
    assert slow.holding.wait(HANG_GUARD)
    assert client.get("/api/webhooks", headers=admin_auth).status_code == 200
    assert not slow.release.is_set()
    job.join(HANG_GUARD)
    slow.release.set()
    assert not job.is_alive()
    # in that same run the other webhook got all five, in order; the slow one timed out once
    assert fast.accepted_ids() == events
    assert done["tally"].delivered == 5 and done["tally"].failed == 1
    state = state_of(client, admin_auth, slow_hook["id"])
    assert state["failures"] == 1 and "Timeout" in state["last_error"]


def test_secrets_never_enter_the_log_and_go_with_the_webhook(
    client, admin_auth, db, clock, receivers
):
    receiver = receivers()
    made = register(client, admin_auth, receiver.url, types=["token"], names=["issued"])
    record_facts(db, clock, 1)
    deliver_webhooks(db, clock(), SETTINGS)
    log_text = json.dumps(list(event_log(db).iter_prefix("")))
    assert made["secret"] not in log_text
    assert f"webhook:{made['id']}" in log_text  # the registration itself is a fact
    secrets = [d for d in list_secret_documents(db) if d.get("type") == "webhook_secret"]
    assert [d["secret"] for d in secrets] == [made["secret"]]
    listed = client.get("/api/webhooks", headers=admin_auth).get_json()
    assert made["secret"] not in json.dumps(listed)
    assert listed[0]["types"] == ["token"] and listed[0]["names"] == ["issued"]
    removed = client.delete(f"/api/webhooks/{made['id']}", headers=admin_auth)
    assert removed.status_code == 200 and removed.get_json()["state"] == "removed"
    assert not [d for d in list_secret_documents(db) if d.get("type") == "webhook_secret"]
    assert client.get(f"/api/webhooks/{made['id']}", headers=admin_auth).status_code == 404
    record_facts(db, clock, 1, prefix="after")
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 0


def test_filters_choose_what_a_webhook_gets(client, admin_auth, db, clock, receivers):
    receiver = receivers()
    register(client, admin_auth, receiver.url, types=["user"])
    record_facts(db, clock, 2)
    client.post(
        "/api/tokens", json={"name": "dash", "role": "reader"}, headers=admin_auth
    )  # a token: not delivered
    add_user(db, "someone", "a long passphrase", admin=False, actor="test", now=clock())
    assert deliver_webhooks(db, clock(), SETTINGS).delivered == 1
    [(_, body)] = receiver.accepted
    assert json.loads(body)["changes"][0]["aggregate"] == "user:someone"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.org/hook"}, "invalid_url"),
        ({"url": "https://user:pw@example.org/hook"}, "invalid_url"),
        ({"url": "https://example.org/hook", "types": ["no spaces"]}, "validation_failed"),
        ({"url": "https://example.org/hook", "since": "yesterday"}, "validation_failed"),
        ({"types": ["album"]}, "validation_failed"),
    ],
)
def test_bad_registrations_are_400(client, admin_auth, body, code):
    response = client.post("/api/webhooks", json=body, headers=admin_auth)
    assert response.status_code == 400 and response.get_json()["error"] == code


def test_unknown_webhooks_are_404(client, admin_auth):
    for method, path in (
        ("get", "/api/webhooks/nope"),
        ("delete", "/api/webhooks/nope"),
        ("get", "/api/webhooks/nope/dead-letters"),
        ("post", "/api/webhooks/nope/dead-letters/redeliver"),
    ):
        response = getattr(client, method)(path, headers=admin_auth)
        assert response.status_code == 404 and response.get_json()["error"] == "webhook_not_found"


def test_a_webhook_registered_since_start_replays_the_log(client, admin_auth, db, clock, receivers):
    events = record_facts(db, clock, 2)
    receiver = receivers()
    register(client, admin_auth, receiver.url, since="start")
    deliver_webhooks(db, clock(), SETTINGS)
    assert receiver.accepted_ids()[:2] == events


def test_the_cli_twin(db, receivers, tmp_path, clock):
    receiver = receivers()
    env = {
        "DISTLEECH_CONFIG": str(tmp_path / "absent.yaml"),
        "DISTLEECH_COUCHDB__URL": db.server_url,
        "DISTLEECH_COUCHDB__DATABASE": db.name,
        "DISTLEECH_EVENTS__WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is local
    }
    runner = CliRunner()
    added = runner.invoke(main, ["webhook", "add", receiver.url, "--type", "token"], env=env)
    assert added.exit_code == 0, added.output
    webhook_id, secret = added.stdout.split()[:2]
    listed = runner.invoke(main, ["webhook", "list"], env=env)
    assert webhook_id in listed.stdout and secret not in listed.stdout
    assert "type=token" in listed.stdout
    empty = runner.invoke(main, ["webhook", "dead-letters", webhook_id], env=env)
    assert empty.exit_code == 0 and empty.stdout == ""
    redeliver = runner.invoke(main, ["webhook", "redeliver", webhook_id], env=env)
    assert redeliver.exit_code == 0 and "0 dead letter(s)" in redeliver.stdout
    removed = runner.invoke(main, ["webhook", "remove", webhook_id], env=env)
    assert removed.exit_code == 0
    again = runner.invoke(main, ["webhook", "remove", webhook_id], env=env)
    assert again.exit_code == 1 and "webhook_not_found" in again.output


def test_webhook_projections_rebuild_from_the_log_alone(client, admin_auth, db, receivers):
    kept = register(client, admin_auth, receivers().url)
    gone = register(client, admin_auth, receivers().url, types=["album"], names=["leased"])
    assert client.delete(f"/api/webhooks/{gone['id']}", headers=admin_auth).status_code == 200
    report = rebuild_projections(db, check_only=True)
    assert report.differing == [] and report.without_events == []
    assert {w["id"] for w in client.get("/api/webhooks", headers=admin_auth).get_json()} == {
        kept["id"]
    }


def other_site(db, site="beta"):
    """The same read model and log as another site's code sees them: what it records
    arrives here as events only (as replication and the projector would bring them)."""
    return Database(db.server, db.name, site=site)


def remove_at_other_site(db, webhook_id, clock):
    """Record `removed` as another site's remove_webhook would, without our clean-up."""

    def decide(state):
        return ("removed", {}) if state and state.get("state") == "active" else None

    [outcome] = commit(other_site(db), [(f"webhook:{webhook_id}", decide)], actor="b", now=clock())
    assert outcome.recorded


def dead_letter_ids(db, webhook_id):
    return list(db.iter_ids(f"deadletter:{webhook_id}:"))


def test_a_webhook_removed_at_another_site_is_forgotten_here(
    client, admin_auth, db, clock, receivers
):
    # registered here; its receiver fails every attempt, so it has a dead letter here
    receiver = receivers(always_fail=True)
    made = register(client, admin_auth, receiver.url)
    record_facts(db, clock, 1)
    for _ in range(3):
        deliver_webhooks(db, clock(), SETTINGS)
        clock.advance(seconds=40)
    assert len(dead_letter_ids(db, made["id"])) == 1
    attempts = len(receiver.attempts)
    # another site removes it: only the event comes here, so secret and state stay
    remove_at_other_site(db, made["id"], clock)
    assert get_secret(db, made["id"]) is not None
    # the next run of the delivery job forgets them, and posts nothing
    record_facts(db, clock, 1, prefix="later")
    assert deliver_webhooks(db, clock(), SETTINGS).failed == 0
    assert get_secret(db, made["id"]) is None
    assert db.get_or_none(checkpoint_id(made["id"])) is None
    assert dead_letter_ids(db, made["id"]) == []
    assert len(receiver.attempts) == attempts
    # the projections still equal what the log alone rebuilds
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_webhook_removed_during_a_run_gets_nothing_more_and_no_dead_letters(
    client, admin_auth, db, clock, receivers
):
    made = {}

    def remove_on_first_request(headers):
        if not made.get("removed"):
            made["removed"] = True
            remove_webhook(db, made["id"], actor="test", now=clock())

    # the receiver refuses; each refusal is final (one attempt), so each would be a dead letter
    receiver = receivers(always_fail=True, on_request=remove_on_first_request)
    made.update(register(client, admin_auth, receiver.url))
    record_facts(db, clock, 5)
    one_attempt = dataclasses.replace(SETTINGS, webhook_max_attempts=1)
    tally = deliver_webhooks(db, clock(), one_attempt)
    # removed while the first POST was under way: no more POSTs, nothing kept
    assert len(receiver.attempts) == 1 and tally.dead == 0
    assert dead_letter_ids(db, made["id"]) == []
    assert db.get_or_none(checkpoint_id(made["id"])) is None
    assert get_secret(db, made["id"]) is None
    assert rebuild_projections(db, check_only=True).differing == []


def test_last_error_never_echoes_the_receivers_body(client, admin_auth, db, clock, receivers):
    receiver = receivers(always_fail=True, body=b"internal: password=hunter2 at 10.0.0.7")
    made = register(client, admin_auth, receiver.url)
    record_facts(db, clock, 1)
    deliver_webhooks(db, clock(), SETTINGS)
    assert state_of(client, admin_auth, made["id"])["last_error"] == (
        "HTTP 500 Internal Server Error"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_hosts_are_refused_unless_allowed(make_app, admin_auth, url):
    client = make_app().test_client()  # events.webhook_allow_private is off by default
    response = client.post("/api/webhooks", json={"url": url}, headers=admin_auth)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_url"


def test_deliveries_reach_no_private_address_unless_allowed(
    client, admin_auth, db, clock, receivers
):
    # registered while allowed; then the rule holds (as if DNS had changed since)
    receiver = receivers()
    made = register(client, admin_auth, receiver.url)
    record_facts(db, clock, 1)
    strict = dataclasses.replace(SETTINGS, webhook_allow_private=False)
    assert deliver_webhooks(db, clock(), strict).failed == 1
    assert receiver.attempts == []
    error = state_of(client, admin_auth, made["id"])["last_error"]
    assert "127.0.0.1" in error and "not a public address" in error


def test_listing_webhooks_reads_no_log_rows(client, admin_auth, db, clock, receivers, monkeypatch):
    record_facts(db, clock, 3)
    made = register(client, admin_auth, receivers().url, since="start")

    def no_log_reads(*args, **kwargs):
        raise AssertionError("GET /api/webhooks read the log")

    monkeypatch.setattr(delivery, "read_batch", no_log_reads)
    [listed] = client.get("/api/webhooks", headers=admin_auth).get_json()
    assert listed["id"] == made["id"]
    # an estimate: every change of the log after the position (at least the 3 tokens)
    assert listed["delivery"]["pending"] >= 3 and listed["delivery"]["pending_exact"] is False
