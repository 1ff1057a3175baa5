"""Releasing a lease by hand and retrying a failed URL: the operations, their API and CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import token_header
from factories import get_album, make_albums

from app.cli.main import main
from app.queues import archive
from app.store.events import EVENT_PREFIX, event_log
from app.store.projections import rebuild_projections

PTH = "https://passtheheadphones.me/"


def release(client, auth, item_id, **extra):
    return client.post("/api/admin/release", json={"id": item_id, **extra}, headers=auth)


def lease_albums(client, worker, rows=2):
    return client.get(f"/metadata/{rows}", headers=worker).get_json()["albums"]


def test_a_released_album_is_ready_at_once_and_a_late_result_still_counts(
    client, db, clock, admin_auth, worker
):
    # two albums, both leased by a worker
    make_albums(db, 2, now=clock())
    leased = lease_albums(client, worker)
    assert len(leased) == 2
    first = leased[0]["id"]

    # the admin sees both leases, then releases one with a reason
    shown = client.get("/api/admin/leases", headers=admin_auth).get_json()
    assert shown["metadata"]["total"] == 2
    assert {i["holders"][0]["holder"] for i in shown["metadata"]["items"]} == {"worker-1"}
    response = release(client, admin_auth, f"album:{first}", reason="worker died")
    assert response.status_code == 200
    assert response.get_json()["released"] == ["worker-1"]

    # the album is handed out again at once, long before the lease would have expired
    assert [a["id"] for a in lease_albums(client, worker)] == [first]
    assert client.get("/api/admin/leases", headers=admin_auth).get_json()["metadata"]["total"] == 2

    # the event names the admin and the reason, and the log still rebuilds what is stored
    released = [
        (event["actor"], change["data"])
        for event in event_log(db).iter_prefix(EVENT_PREFIX)
        for change in event["changes"]
        if change["name"] == "released"
    ]
    assert released == [
        ("root", {"holder": "worker-1", "holders": ["worker-1"], "reason": "worker died"})
    ]
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_result_sent_after_a_release_is_recorded(client, db, clock, admin_auth, worker):
    # the worker leased the album, the admin released it, then the worker's answer arrives
    [album] = make_albums(db, 1, now=clock())
    lease_albums(client, worker, 1)
    assert release(client, admin_auth, f"album:{album}").status_code == 200
    found = {str(album): [{"site": PTH, "torrentId": 37}]}
    answer = client.post("/metadata/submit", json=found, headers=worker)
    assert answer.status_code == 200
    assert get_album(db, album)["state"] == "found"
    assert rebuild_projections(db, check_only=True).differing == []


def test_releasing_what_is_not_leased_or_unknown_is_404_and_changes_nothing(
    client, db, clock, admin_auth
):
    [album] = make_albums(db, 1, now=clock())
    before = get_album(db, album)
    for item_id in (f"album:{album}", "album:1", "urltask:5"):
        response = release(client, admin_auth, item_id)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
    assert get_album(db, album)["_rev"] == before["_rev"]


@pytest.mark.parametrize("body", [{}, {"id": ""}, {"id": 5}, {"id": "album"}, {"id": "x", "y": 1}])
def test_a_bad_release_body_is_400(client, admin_auth, body):
    response = client.post("/api/admin/release", json=body, headers=admin_auth)
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_failed"


def test_only_admins_release_and_retry(client, worker, queuer_token):
    assert client.post("/api/admin/release", json={"id": "album:1"}).status_code == 401
    for headers in (worker, token_header(queuer_token)):
        assert release(client, headers, "album:1").status_code == 403
        assert (
            client.post("/api/worker/retry", data={"id": "1"}, headers=headers).status_code == 403
        )
        assert client.get("/api/worker/tasks", headers=headers).status_code == 403


def fail_for_good(client, queuer, worker, url="https://example.org/v/1"):
    """Queue a URL and fail it until it is failed for good (3 attempts by default)."""
    task_id = client.post("/api/worker/queue", data={"url": url}, headers=queuer).get_json()["id"]
    return task_id


def test_retry_queues_a_failed_task_again_with_fresh_attempts(
    make_app, db, clock, admin_auth, worker, queuer_token
):
    client = make_app(leases={"archive_max_attempts": 1}).test_client()
    queuer = token_header(queuer_token)
    task_id = fail_for_good(client, queuer, worker)
    client.get("/api/worker/next", headers=worker)
    data = {"id": task_id, "status": "failed", "reason": "HTTP 410 Gone"}
    assert (
        client.post("/api/worker/complete", data=data, headers=worker).get_json()["state"]
        == "failed"
    )

    # the admin lists the failure with its reason, then retries it
    failed = client.get("/api/worker/tasks?state=failed", headers=admin_auth).get_json()
    assert [(t["id"], t["last_reason"]) for t in failed["tasks"]] == [(task_id, "HTTP 410 Gone")]
    retried = client.post("/api/worker/retry", data={"id": task_id}, headers=admin_auth).get_json()
    assert (retried["state"], retried["recorded"], retried["attempts"]) == ("ready", True, 0)

    # a second retry changes nothing; a worker gets the task again
    again = client.post("/api/worker/retry", json={"id": task_id}, headers=admin_auth).get_json()
    assert again["recorded"] is False
    assert client.get("/api/worker/next", headers=worker).get_json()["id"] == task_id
    assert rebuild_projections(db, check_only=True).differing == []


def test_retry_of_an_unknown_task_is_404_and_a_bad_id_400(client, admin_auth):
    unknown = client.post("/api/worker/retry", data={"id": "12345"}, headers=admin_auth)
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "task_not_found")
    bad = client.post("/api/worker/retry", data={"id": "x"}, headers=admin_auth)
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_task_id")
    state = client.get("/api/worker/tasks?state=sleeping", headers=admin_auth)
    assert state.status_code == 400


@pytest.fixture
def cli_env(tmp_path, db, monkeypatch):
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", db.name)
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    return CliRunner()


def test_cli_lists_releases_and_says_why_it_cannot(cli_env, client, db, clock, worker):
    [album] = make_albums(db, 1, now=clock())
    lease_albums(client, worker, 1)
    listed = cli_env.invoke(main, ["lease", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"album:{album}  worker-1" in listed.output
    released = cli_env.invoke(main, ["lease", "release", f"album:{album}", "--reason", "stuck"])
    assert released.exit_code == 0, released.output
    assert "released from worker-1: ready" in released.output
    again = cli_env.invoke(main, ["lease", "release", f"album:{album}"])
    assert again.exit_code == 1
    assert "not_found" in again.output


def test_cli_queues_and_retries_urls(cli_env, db, clock):
    queued = cli_env.invoke(main, ["lease", "queue-url", "https://example.org/a", "--mode", "1"])
    assert queued.exit_code == 0, queued.output
    task_id = archive.url_task_id("https://example.org/a")
    assert f"queued: task {task_id}" in queued.output
    not_failed = cli_env.invoke(main, ["lease", "retry", str(task_id)])
    assert "not failed: nothing changed" in not_failed.output
    assert (
        "invalid_mode"
        in cli_env.invoke(main, ["lease", "queue-url", "https://x.org", "--mode", "7"]).output
    )
    unknown = cli_env.invoke(main, ["lease", "retry", "99"])
    assert unknown.exit_code == 1 and "task_not_found" in unknown.output
