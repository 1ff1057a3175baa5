"""The Patchwork-compatible URL archive queue, over HTTP against the bundled server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import token_header
from factories import db_snapshot

from app.accounts.auth import issue_token
from app.queues import archive
from app.queues.leasing import reap_expired_leases
from app.store.events import read_events
from app.store.projections import rebuild_projections
from app.timeutil import iso

URL = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


@pytest.fixture
def queuer(queuer_token):
    return token_header(queuer_token)


@pytest.fixture
def worker2(db, clock):
    return token_header(issue_token(db, "worker-2", "worker", actor="test", now=clock()))


def queue(client, headers, url=URL, **fields):
    return client.post("/api/worker/queue", data={"url": url, **fields}, headers=headers)


def lease(client, headers):
    return client.get("/api/worker/next", headers=headers)


def complete(client, headers, task_id, status="done", **fields):
    data = {"id": str(task_id), "status": status, **fields}
    return client.post("/api/worker/complete", data=data, headers=headers)


def status(client):
    return client.get("/api/status").get_json()


def worker_entry(client, name):
    return next(w for w in status(client)["workers"] if w["name"] == name)


def test_queue_lease_complete_scenario(client, db, queuer, worker):
    # a queuer adds a URL: 201 with its stable id
    created = queue(client, queuer)
    assert created.status_code == 201
    body = created.get_json()
    assert body["status"] == "queued" and body["state"] == "ready" and body["mode"] == 0
    task_id = body["id"]
    assert task_id == archive.url_task_id(URL)
    # a worker leases it, in Patchwork's shape
    leased = lease(client, worker)
    assert leased.status_code == 200
    assert leased.get_json() == {"next_video": URL, "mode": 0, "id": task_id}
    # nothing else is ready
    assert lease(client, worker).status_code == 204
    # the worker reports it done
    done = complete(client, worker, task_id)
    assert done.status_code == 200
    assert done.get_json()["state"] == "done" and done.get_json()["recorded"] is True
    # the dashboard shows the count and the worker's tally
    assert status(client)["queue"] == {"ready": 0, "leased": 0, "done": 1, "failed": 0}
    assert worker_entry(client, "worker-1")["tasks_done"] == 1
    # every projection equals what its events say
    assert rebuild_projections(db, check_only=True).differing == []


def test_queue_accepts_json_and_mode(client, queuer, worker):
    response = client.post("/api/worker/queue", json={"url": URL, "mode": 2}, headers=queuer)
    assert response.status_code == 201
    assert lease(client, worker).get_json()["mode"] == 2


def test_json_sent_as_form_by_curl_is_refused_and_queues_nothing(client, db, queuer):
    # curl -d '{"url": …}' sends application/x-www-form-urlencoded: JSON is read only
    # with a JSON content type, so a web page cannot post JSON with a user's credentials
    before = db_snapshot(db)
    response = client.post(
        "/api/worker/queue",
        data=f'{{"url": "{URL}", "mode": "1"}}',
        content_type="application/x-www-form-urlencoded",
        headers=queuer,
    )
    assert (response.status_code, response.get_json()["error"]) == (415, "unsupported_media_type")
    assert db_snapshot(db) == before


def test_duplicate_queue_is_reported_not_doubled(client, db, queuer, worker):
    first = queue(client, queuer).get_json()
    # the same URL with an upper-case scheme and host is the same task
    again = queue(client, queuer, URL.replace("https://www.youtube.com", "HTTPS://WWW.YouTube.com"))
    assert again.status_code == 200
    assert again.get_json()["status"] == "already_queued"
    assert again.get_json()["id"] == first["id"]
    # still reported once leased; only one lease is ever handed out
    assert lease(client, worker).status_code == 200
    leased_again = queue(client, queuer, mode="1").get_json()
    assert leased_again["status"] == "already_queued" and leased_again["state"] == "leased"
    assert lease(client, worker).status_code == 204
    assert len(read_events(db, archive.task_doc_id(first["id"]))) == 2  # queued, leased


def test_next_on_empty_queue_is_204_with_empty_body(client, worker):
    response = lease(client, worker)
    assert response.status_code == 204
    assert response.data == b""


def test_expired_lease_returns_and_late_completion_counts(
    client, db, clock, queuer, worker, worker2
):
    task_id = queue(client, queuer).get_json()["id"]
    assert lease(client, worker).status_code == 200
    # the lease runs out and the reaper returns the task to the queue
    clock.advance(minutes=61)
    assert reap_expired_leases(db, clock()) == 1
    assert lease(client, worker2).get_json()["id"] == task_id
    # the first worker finishes late: its result is kept and counted
    late = complete(client, worker, task_id).get_json()
    assert late["state"] == "done" and late["recorded"] is True
    # the second worker's report changes nothing and counts for nobody
    repeat = complete(client, worker2, task_id).get_json()
    assert repeat == {**repeat, "state": "done", "recorded": False}
    tallies = {w["name"]: w["tasks_done"] for w in status(client)["workers"]}
    assert tallies == {"worker-1": 1}


def test_failures_back_off_then_fail_for_good(make_app, db, clock, queuer, worker):
    client = make_app(leases={"archive_max_attempts": 3}).test_client()
    task_id = queue(client, queuer).get_json()["id"]
    for attempt, delay in ((1, 5), (2, 10)):
        assert lease(client, worker).status_code == 200
        failed = complete(client, worker, task_id, "failed", reason="HTTP 429").get_json()
        assert failed["state"] == "ready" and failed["attempts"] == attempt
        assert failed["retry_at"] == iso(clock() + timedelta(minutes=delay))
        # not due yet, then due
        clock.advance(minutes=delay - 1)
        assert lease(client, worker).status_code == 204
        clock.advance(minutes=1)
    assert lease(client, worker).status_code == 200
    final = complete(client, worker, task_id, "failed", reason="video removed").get_json()
    assert final["state"] == "failed" and final["final"] is True
    assert final["reason"] == "video removed"
    clock.advance(days=2)
    assert lease(client, worker).status_code == 204
    assert status(client)["queue"]["failed"] == 1
    assert worker_entry(client, "worker-1")["tasks_failed"] == 3
    assert rebuild_projections(db, check_only=True).differing == []


def test_done_or_failed_url_can_be_queued_again(client, queuer, worker):
    task_id = queue(client, queuer).get_json()["id"]
    lease(client, worker)
    complete(client, worker, task_id)
    # a re-archive starts a new round on the same task
    again = queue(client, queuer, mode="1")
    assert again.status_code == 201
    assert again.get_json() == {**again.get_json(), "id": task_id, "state": "ready", "mode": 1}
    assert lease(client, worker).get_json() == {"next_video": URL, "mode": 1, "id": task_id}


def test_late_result_of_an_earlier_round_does_not_end_the_new_one(client, queuer, worker, worker2):
    task_id = queue(client, queuer).get_json()["id"]
    lease(client, worker)
    complete(client, worker, task_id)
    queue(client, queuer, mode="1")
    lease(client, worker2)
    # worker-1 repeats its round-1 answer: recorded, but the round goes on
    stale = complete(client, worker, task_id).get_json()
    assert stale["recorded"] is True and stale["ignored"] == "stale"
    assert stale["state"] == "leased"
    assert complete(client, worker2, task_id).get_json()["state"] == "done"


def test_failure_after_the_lease_moved_on_leaves_the_new_holder_alone(
    client, db, clock, queuer, worker, worker2
):
    task_id = queue(client, queuer).get_json()["id"]
    lease(client, worker)
    clock.advance(minutes=61)
    reap_expired_leases(db, clock())
    lease(client, worker2)
    superseded = complete(client, worker, task_id, "failed").get_json()
    assert superseded["ignored"] == "superseded"
    assert superseded["state"] == "leased" and superseded["attempts"] == 0
    assert worker_entry(client, "worker-1")["tasks_failed"] == 1


def test_admin_may_queue_lease_and_settle(client, admin_auth):
    task_id = queue(client, admin_auth).get_json()["id"]
    assert lease(client, admin_auth).get_json()["id"] == task_id
    assert complete(client, admin_auth, task_id).get_json()["state"] == "done"


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/worker/queue"),
        ("get", "/api/worker/next"),
        ("post", "/api/worker/complete"),
        ("post", "/api/worker/heartbeat"),
    ],
)
def test_no_credential_is_401(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.get_json()["error"] == "authentication_required"


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/worker/queue"),
        ("get", "/api/worker/next"),
        ("post", "/api/worker/complete"),
        ("post", "/api/worker/heartbeat"),
    ],
)
def test_wrong_token_is_401(client, method, path):
    response = getattr(client, method)(path, headers=token_header("not-a-token"))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_credentials"


def test_worker_token_may_not_queue(client, db, worker):
    before = db.info()["update_seq"]
    response = queue(client, worker)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert db.info()["update_seq"] == before


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/worker/next"),
        ("post", "/api/worker/complete"),
        ("post", "/api/worker/heartbeat"),
    ],
)
def test_queuer_token_may_not_work(client, queuer, method, path):
    response = getattr(client, method)(path, headers=queuer)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_queue_by_get_is_405(client, queuer):
    response = client.get("/api/worker/queue", headers=queuer)
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


# ---------------------------------------------------------------- bad input


def send(client, path, headers, body):
    """Post a form (dict), a JSON document (("json", value)) or raw text (("raw", type, text))."""
    if isinstance(body, tuple) and body[0] == "json":
        return client.post(path, json=body[1], headers=headers)
    if isinstance(body, tuple):
        return client.post(path, data=body[2], content_type=body[1], headers=headers)
    return client.post(path, data=body, headers=headers)


def assert_refused_and_unchanged(client, db, path, headers, body, code, status=400):
    before = db.info()["update_seq"]
    response = send(client, path, headers, body)
    assert (response.status_code, response.get_json()["error"]) == (status, code)
    assert db.info()["update_seq"] == before


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "missing_field"),
        ({"url": "  "}, "missing_field"),
        ({"url": "ftp://example.com/file"}, "invalid_url"),
        ({"url": "http://"}, "invalid_url"),
        ({"url": "http:/example.com/x"}, "invalid_url"),
        ({"url": "example.com/watch"}, "invalid_url"),
        ({"url": "https://example.com/a b"}, "invalid_url"),
        ({"url": "https://example.com:port/"}, "invalid_url"),
        ({"url": "https://[::1/"}, "invalid_url"),
        ({"url": "https://example.com/" + "a" * 2048}, "invalid_url"),
        ({"url": URL, "mode": "3"}, "invalid_mode"),
        ({"url": URL, "mode": "-1"}, "invalid_mode"),
        ({"url": URL, "mode": "archive"}, "invalid_mode"),
        (("json", {"url": 5}), "invalid_url"),
        (("json", {"url": URL, "mode": True}), "invalid_mode"),
        (("json", {"url": URL, "mode": [1]}), "invalid_mode"),
        (("json", [URL]), "validation_failed"),
        (("raw", "application/json", ""), "invalid_json"),
        (("raw", "application/json", "{"), "invalid_json"),
    ],
)
def test_bad_queue_input_is_refused(client, db, queuer, body, code):
    assert_refused_and_unchanged(client, db, "/api/worker/queue", queuer, body, code)


@pytest.fixture
def leased_task(client, queuer, worker):
    task_id = queue(client, queuer).get_json()["id"]
    lease(client, worker)
    return task_id


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "missing_field"),
        ({"status": "done"}, "missing_field"),
        ({"id": "abc", "status": "done"}, "invalid_task_id"),
        ({"id": "0", "status": "done"}, "invalid_task_id"),
        ({"id": "-3", "status": "done"}, "invalid_task_id"),
        ({"id": "²", "status": "done"}, "invalid_task_id"),
        ({"id": str(2**60), "status": "done"}, "invalid_task_id"),
        (("json", {"id": 1.5, "status": "done"}), "invalid_task_id"),
        (("json", {"id": True, "status": "done"}), "invalid_task_id"),
        ({"id": "{task}"}, "missing_field"),
        ({"id": "{task}", "status": "finished"}, "invalid_status"),
        (("json", {"id": "{task}", "status": 1}), "invalid_status"),
        ({"id": "{task}", "status": "failed", "reason": "x" * 1001}, "invalid_reason"),
        (("json", {"id": "{task}", "status": "failed", "reason": 7}), "invalid_reason"),
        (("raw", "application/json", "[]"), "validation_failed"),
    ],
)
def test_bad_completion_input_is_refused(client, db, worker, leased_task, body, code):
    body = _fill_task_id(body, leased_task)
    assert_refused_and_unchanged(client, db, "/api/worker/complete", worker, body, code)


def _fill_task_id(body, task_id):
    """Put the real task id where a parameter says {task}."""
    if isinstance(body, tuple) and body[0] == "json":
        return ("json", {k: task_id if v == "{task}" else v for k, v in body[1].items()})
    if isinstance(body, dict):
        return {k: str(task_id) if v == "{task}" else v for k, v in body.items()}
    return body


def test_completion_of_unknown_task_is_404(client, db, worker, leased_task):
    unknown = {"id": str(leased_task + 1), "status": "done"}
    assert_refused_and_unchanged(
        client, db, "/api/worker/complete", worker, unknown, "task_not_found", status=404
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  HTTPS://Example.COM/Watch?V=Ab ", "https://example.com/Watch?V=Ab"),
        ("http://User:Pw@Host.Example:8080/P#F", "http://User:Pw@host.example:8080/P#F"),
        ("https://example.com?", "https://example.com?"),
    ],
)
def test_urls_are_normalised_in_scheme_and_host_only(raw, expected):
    assert archive.check_url(raw) == expected
