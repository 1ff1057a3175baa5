"""Worker tracking: heartbeats, task tallies and the public /api/status."""

from __future__ import annotations

import threading

import pytest

from app.accounts.auth import issue_token
from app.queues import workers
from app.store.events import read_events
from app.timeutil import iso


def heartbeat(client, headers, name="alpha", status="idle"):
    return client.post(
        "/api/worker/heartbeat", data={"name": name, "status": status}, headers=headers
    )


def recorded(db, name="alpha"):
    return [e["data"]["status"] for e in read_events(db, workers.worker_doc_id(name))]


def test_heartbeat_then_status(client, clock, worker):
    response = heartbeat(client, worker, status="downloading 3 videos")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "name": "alpha", "last_seen": iso(clock())}
    body = client.get("/api/status").get_json()
    assert body["workers"] == [
        {
            "name": "alpha",
            "status": "downloading 3 videos",
            "last_seen": iso(clock()),
            "online": True,
            "tasks_done": 0,
            "tasks_failed": 0,
        }
    ]


def test_only_changes_and_stale_heartbeats_are_recorded(make_app, db, clock, worker):
    client = make_app(workers={"heartbeat_record_seconds": 60}).test_client()
    heartbeat(client, worker, status="idle")
    # the same status again soon: answered, not recorded
    clock.advance(seconds=30)
    assert heartbeat(client, worker, status="idle").get_json()["last_seen"] == iso(clock())
    assert recorded(db) == ["idle"]
    # a new status is recorded at once
    heartbeat(client, worker, status="busy")
    assert recorded(db) == ["idle", "busy"]
    # the same status after the interval is recorded again
    clock.advance(seconds=61)
    heartbeat(client, worker, status="busy")
    assert recorded(db) == ["idle", "busy", "busy"]


def test_skipped_beats_never_make_a_worker_look_offline():
    # a record interval longer than the offline threshold is cut to half of it
    interval = workers.record_interval(record_seconds=600, offline_after_seconds=300)
    assert interval.total_seconds() == 150


def test_worker_goes_offline_after_silence(make_app, clock, worker):
    client = make_app(workers={"offline_after_seconds": 300}).test_client()
    heartbeat(client, worker)
    clock.advance(seconds=299)
    assert client.get("/api/status").get_json()["workers"][0]["online"] is True
    clock.advance(seconds=2)
    assert client.get("/api/status").get_json()["workers"][0]["online"] is False


def test_status_is_public_and_empty_at_first(client):
    assert client.get("/api/status").get_json() == {
        "workers": [],
        "queue": {"ready": 0, "leased": 0, "done": 0, "failed": 0},
    }


def test_heartbeat_under_another_tokens_name_is_forbidden(client, db, clock, worker, admin_auth):
    issue_token(db, "worker-2", "worker", actor="test", now=clock())
    before = db.info()["update_seq"]
    response = heartbeat(client, worker, name="worker-2")
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert db.info()["update_seq"] == before
    # its own token's name, a name no token carries, and any name for an admin are fine
    assert heartbeat(client, worker, name="worker-1").status_code == 200
    assert heartbeat(client, worker, name="rack-7").status_code == 200
    assert heartbeat(client, admin_auth, name="worker-2").status_code == 200


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "missing_field"),
        ({"status": "idle"}, "missing_field"),
        ({"name": "alpha"}, "missing_field"),
        ({"name": "bad name!", "status": "idle"}, "invalid_name"),
        ({"name": "a" * 65, "status": "idle"}, "invalid_name"),
        ({"name": "alpha", "status": "x" * 201}, "invalid_status"),
        (("json", {"name": "alpha", "status": 5}), "invalid_status"),
        (("json", {"name": ["alpha"], "status": "idle"}), "invalid_name"),
        (("json", "alpha"), "validation_failed"),
    ],
)
def test_bad_heartbeat_input_is_refused(client, db, worker, body, code):
    before = db.info()["update_seq"]
    if isinstance(body, tuple):
        response = client.post("/api/worker/heartbeat", json=body[1], headers=worker)
    else:
        response = client.post("/api/worker/heartbeat", data=body, headers=worker)
    assert (response.status_code, response.get_json()["error"]) == (400, code)
    assert db.info()["update_seq"] == before


def test_concurrent_results_of_one_worker_are_all_counted(db, clock):
    # every thread races for the same worker's next event version
    def report(start):
        for task_id in range(start, start + 5):
            source = f"ev:urltask:{task_id}:0000000002"
            workers.record_task_result(db, "worker-1", task_id, "done", source=source, now=clock())

    threads = [threading.Thread(target=report, args=(i * 100,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.get(workers.worker_doc_id("worker-1"))["tasks_done"] == 30


def test_a_result_counted_once_is_never_counted_again(db, clock):
    # a retry after the event store gave up must not count the same task event twice
    for _ in range(2):
        workers.record_task_result(
            db, "worker-1", 7, "failed", source="ev:urltask:7:0000000003", now=clock()
        )
    doc = db.get(workers.worker_doc_id("worker-1"))
    assert (doc["tasks_done"], doc["tasks_failed"]) == (0, 1)
