"""Sources over HTTP against the bundled server: admins manage, workers sync."""

from __future__ import annotations

import json

import pytest
from conftest import token_header

from app.accounts import credentials
from app.accounts.auth import issue_token
from app.queues.leasing import reap_expired_leases
from app.sources import files
from app.store.events import event_log
from app.store.projections import rebuild_projections

COOKIES = "# Netscape HTTP Cookie File\n.example.org\tTRUE\t/\tTRUE\t0\tsession\tsecret-c00kie\n"
SHA = "ab" * 32
SOURCE = {"id": "portraits", "url": "https://example.org/c/1", "content_path": "portraits/"}


@pytest.fixture
def worker2(db, clock):
    return token_header(issue_token(db, "worker-2", "worker", actor="test", now=clock()))


def add(client, admin_auth, **fields):
    return client.post("/api/sources", json={**SOURCE, **fields}, headers=admin_auth)


def sync(client, admin_auth, source_id="portraits"):
    return client.post(f"/api/sources/{source_id}/sync", headers=admin_auth)


def lease(client, headers):
    return client.get("/api/sources/next", headers=headers)


def post_files(client, headers, order, entries, source_id="portraits"):
    body = {"order": order, "files": entries}
    return client.post(f"/api/sources/{source_id}/files", json=body, headers=headers)


def finish(client, headers, order, status="synchronised", source_id="portraits", **fields):
    body = {"order": order, "status": status, **fields}
    return client.post(f"/api/sources/{source_id}/synchronised", json=body, headers=headers)


def entry(filename, status="downloaded", size=10, sha256=SHA):
    return {"filename": filename, "status": status, "size": size, "sha256": sha256}


def everything_stored(db) -> str:
    """Every document of the event log and the read model, as one text."""
    docs = list(event_log(db).iter_prefix("")) + list(db.iter_prefix(""))
    return json.dumps(docs)


def test_add_sync_lease_report_scenario(client, db, clock, admin_auth, worker):
    # an admin adds a source (a trailing slash of the content path is dropped)
    created = add(client, admin_auth, schedule={"interval_seconds": 3600})
    assert created.status_code == 201
    assert created.get_json()["content_path"] == "portraits"
    # and gives it cookies, which are never echoed back
    put = client.put(
        "/api/sources/portraits/cookies",
        data=COOKIES,
        headers={**admin_auth, "Content-Type": "text/plain"},
    )
    assert put.status_code == 200 and "secret-c00kie" not in put.get_data(as_text=True)
    # nothing is due yet; then an admin orders a sync, and ordering again changes nothing
    assert lease(client, worker).status_code == 204
    ordered = sync(client, admin_auth)
    assert ordered.status_code == 202 and ordered.get_json()["status"] == "queued"
    order = ordered.get_json()["order"]
    again = sync(client, admin_auth)
    assert again.status_code == 200 and again.get_json()["status"] == "already_queued"
    assert again.get_json()["order"] == order
    # a worker leases it, with everything gallery-dl needs
    leased = lease(client, worker)
    assert leased.status_code == 200
    body = leased.get_json()
    assert body["order"] == order and body["source_id"] == "portraits"
    assert body["url"] == SOURCE["url"] and body["content_path"] == "portraits"
    assert body["cookies"] == COOKIES and body["known_files"] == []
    assert body["sync_remote_deletes"] is False and body["expires_at"]
    assert lease(client, worker).status_code == 204
    # it reports files in a batch: one event for the call
    events_before = len(list(event_log(db).iter_ids("ev:")))
    sent = post_files(client, worker, order, [entry("a.jpg"), entry("sub/b.jpg", "skipped")])
    assert sent.status_code == 200 and sent.get_json()["recorded"] == 2
    assert len(list(event_log(db).iter_ids("ev:"))) == events_before + 1
    # a retry of the same call records nothing new
    retried = post_files(client, worker, order, [entry("a.jpg"), entry("sub/b.jpg", "skipped")])
    assert retried.get_json() == {"recorded": 2, "changed": 0}
    assert len(list(event_log(db).iter_ids("ev:"))) == events_before + 1
    # and ends the order
    done = finish(client, worker, order, counts={"downloaded": 1, "skipped": 1})
    assert done.status_code == 200
    assert done.get_json()["state"] == "synchronised" and done.get_json()["recorded"] is True
    # the admin sees the source with its order and file counts, and the files
    shown = client.get("/api/sources/portraits", headers=admin_auth).get_json()
    assert shown["order"]["state"] == "synchronised" and shown["has_cookies"] is True
    assert shown["files"]["total"] == 2 and shown["files"]["present"] == 2
    assert shown["history"][0]["counts"]["downloaded"] == 1
    listed = client.get("/api/sources/portraits/files", headers=admin_auth).get_json()
    assert [f["filename"] for f in listed["files"]] == ["a.jpg", "sub/b.jpg"]
    assert listed["files"][1]["location"] == "portraits/sub/b.jpg"
    assert {f["remote_status"] for f in listed["files"]} == {"found"}
    # the next order hands the worker what is present locally
    next_order = sync(client, admin_auth).get_json()["order"]
    assert next_order != order
    assert sorted(lease(client, worker).get_json()["known_files"]) == ["a.jpg", "sub/b.jpg"]
    # cookies are nowhere but in the secrets database
    assert "secret-c00kie" not in everything_stored(db)
    secret_docs = credentials.list_secret_documents(db)
    assert any(d.get("cookies") == COOKIES for d in secret_docs)
    # every projection equals what its events say
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_failed_sync_is_retried_until_max_attempts(client, db, clock, admin_auth, worker):
    add(client, admin_auth)
    order = sync(client, admin_auth).get_json()["order"]
    for attempt in (1, 2):
        assert lease(client, worker).status_code == 200
        failed = finish(client, worker, order, "failed", reason="HTTP 503").get_json()
        assert failed["state"] == "ready" and failed["attempts"] == attempt
        assert lease(client, worker).status_code == 204  # not before its retry time
        clock.advance(hours=1)
    assert lease(client, worker).get_json()["order"] == order
    final = finish(client, worker, order, "failed", reason="HTTP 503").get_json()
    assert final["state"] == "failed" and final["final"] is True
    assert final["last_reason"] == "HTTP 503"
    clock.advance(days=1)
    assert lease(client, worker).status_code == 204
    # a new order may follow a failed one
    assert sync(client, admin_auth).status_code == 202
    assert rebuild_projections(db, check_only=True).differing == []


def test_an_expired_sync_lease_is_reaped_and_late_results_are_kept(
    client, db, clock, admin_auth, worker, worker2
):
    add(client, admin_auth)
    order = sync(client, admin_auth).get_json()["order"]
    assert lease(client, worker).status_code == 200
    clock.advance(minutes=61)  # sources.sync_minutes is 60
    assert reap_expired_leases(db, clock()) == 1
    assert lease(client, worker2).get_json()["order"] == order
    # the first worker's files arrive late: kept all the same
    late = post_files(client, worker, order, [entry("late.jpg")])
    assert late.status_code == 200 and late.get_json()["changed"] == 1
    # its failure does not end worker-2's lease; worker-2's success ends the order
    ignored = finish(client, worker, order, "failed", reason="gone").get_json()
    assert ignored["ignored"] == "superseded" and ignored["state"] == "leased"
    assert finish(client, worker2, order).get_json()["state"] == "synchronised"
    assert rebuild_projections(db, check_only=True).differing == []


@pytest.mark.parametrize(
    "filename",
    [
        "/etc/passwd",
        "../escape.jpg",
        "a/../../b.jpg",
        "a\\b.jpg",
        "nul\x00.jpg",
        "tab\tname.jpg",
        "a//b.jpg",
        "./a.jpg",
        "",
        "\udc80.jpg",  # a lone surrogate: no document can hold it
    ],
)
def test_file_names_that_could_leave_the_content_path_are_refused(
    client, db, admin_auth, worker, filename
):
    add(client, admin_auth)
    order = sync(client, admin_auth).get_json()["order"]
    before = everything_stored(db)
    refused = post_files(client, worker, order, [entry("fine.jpg"), entry(filename)])
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_filename"
    assert everything_stored(db) == before  # nothing of the batch was recorded


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"id": "Bad_Id"}, "invalid_source_id"),
        ({"id": "next"}, "invalid_source_id"),
        ({"id": "x" * 65}, "invalid_source_id"),
        ({"url": "ftp://example.org/"}, "invalid_url"),
        ({"content_path": "/srv/content"}, "invalid_content_path"),
        ({"content_path": "../up"}, "invalid_content_path"),
        ({"content_path": "a/../../b"}, "invalid_content_path"),
        ({"content_path": "a\x00b"}, "invalid_content_path"),
        ({"content_path": "a\\b"}, "invalid_content_path"),
        ({"content_path": ""}, "invalid_content_path"),
        ({"schedule": {"cron": "61 * * * *"}}, "invalid_schedule"),
        ({"schedule": {"cron": "* *"}}, "invalid_schedule"),
        ({"schedule": {"interval_seconds": 5}}, "invalid_schedule"),
        ({"schedule": {"every": 60}}, "invalid_schedule"),
        ({"sync_remote_deletes": "yes"}, "validation_failed"),
        ({"cookies": COOKIES}, "validation_failed"),
    ],
)
def test_bad_sources_are_refused_and_change_nothing(client, db, admin_auth, fields, code):
    before = everything_stored(db)
    refused = add(client, admin_auth, **fields)
    assert refused.status_code == 400
    assert refused.get_json()["error"] == code
    assert everything_stored(db) == before


def test_missing_fields_and_duplicates(client, admin_auth):
    missing = client.post("/api/sources", json={"id": "x"}, headers=admin_auth)
    assert missing.status_code == 400 and missing.get_json()["error"] == "missing_field"
    assert add(client, admin_auth).status_code == 201
    taken = add(client, admin_auth)
    assert taken.status_code == 409 and taken.get_json()["error"] == "source_exists"


def test_change_disable_and_enable(client, db, admin_auth, worker):
    add(client, admin_auth)
    path = "/api/sources/portraits"
    changed = client.patch(path, json={"schedule": {"cron": "0 3 * * *"}}, headers=admin_auth)
    assert changed.status_code == 200 and changed.get_json()["changed"] is True
    assert changed.get_json()["schedule"] == {"cron": "0 3 * * *"}
    same = client.patch(path, json={"schedule": {"cron": "0  3 * * *"}}, headers=admin_auth)
    assert same.get_json()["changed"] is False
    bad = client.patch(path, json={"content_path": "../x"}, headers=admin_auth)
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_content_path"
    # disabling cancels the waiting order; a disabled source cannot be synced
    sync(client, admin_auth)
    off = client.patch(path, json={"enabled": False}, headers=admin_auth).get_json()
    assert off["enabled"] is False and off["order"]["state"] == "cancelled"
    assert lease(client, worker).status_code == 204
    refused = sync(client, admin_auth)
    assert refused.status_code == 409 and refused.get_json()["error"] == "source_disabled"
    client.patch(path, json={"enabled": True}, headers=admin_auth)
    assert sync(client, admin_auth).status_code == 202
    listed = client.get("/api/sources", headers=admin_auth).get_json()["sources"]
    assert [s["id"] for s in listed] == ["portraits"]
    unknown = client.get("/api/sources/nope", headers=admin_auth)
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "source_not_found"
    assert rebuild_projections(db, check_only=True).differing == []


def test_cookies_as_json_are_removed_for_good(client, db, admin_auth):
    add(client, admin_auth)
    path = "/api/sources/portraits/cookies"
    assert client.put(path, json={"cookies": COOKIES}, headers=admin_auth).status_code == 200
    bad = client.put(path, json={"cookies": "not a cookie file"}, headers=admin_auth)
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_cookies"
    removed = client.delete(path, headers=admin_auth)
    assert removed.status_code == 200 and removed.get_json()["removed"] is True
    assert not any(d.get("type") == "source_cookies" for d in credentials.list_secret_documents(db))
    shown = client.get("/api/sources/portraits", headers=admin_auth).get_json()
    assert shown["has_cookies"] is False
    assert "secret-c00kie" not in everything_stored(db)


def test_worker_reports_are_checked(client, db, admin_auth, worker):
    add(client, admin_auth)
    order = sync(client, admin_auth).get_json()["order"]
    # another source's order, an order that never was, a missing sha256, too many files
    add(client, admin_auth, id="other", content_path="other")
    other = sync(client, admin_auth, "other").get_json()["order"]
    cases = [
        (post_files(client, worker, other, [entry("a.jpg")]), 404, "order_not_found"),
        (post_files(client, worker, "portraits.9", [entry("a.jpg")]), 404, "order_not_found"),
        (post_files(client, worker, order, [entry("a.jpg", sha256=None)]), 400, None),
        (post_files(client, worker, order, [entry("a.jpg", "lost")]), 400, "invalid_status"),
        (post_files(client, worker, order, [entry(f"{i}") for i in range(1001)]), 400, None),
        (finish(client, worker, order, "done"), 400, "invalid_status"),
        (finish(client, worker, order, counts={"found": 1}), 400, "validation_failed"),
    ]
    for response, status, code in cases:
        assert response.status_code == status
        if code:
            assert response.get_json()["error"] == code
    assert cases[4][0].get_json()["error"] == "batch_too_large"
    assert files.count_files(db, "portraits")["total"] == 0
    # a missing file without size is fine (from the order's holder)
    leased = {lease(client, worker).get_json()["order"] for _ in range(2)}
    assert order in leased
    ok = post_files(client, worker, order, [{"filename": "x.jpg", "status": "missing_remotely"}])
    assert ok.status_code == 200


def test_files_are_paged(client, admin_auth, worker):
    add(client, admin_auth)
    order = sync(client, admin_auth).get_json()["order"]
    assert lease(client, worker).status_code == 200
    post_files(client, worker, order, [entry(f"{i:02}.jpg") for i in range(5)])
    url = "/api/sources/portraits/files?limit=2"
    seen, after = [], None
    while True:
        page = client.get(url + (f"&after={after}" if after else ""), headers=admin_auth)
        body = page.get_json()
        seen += [f["filename"] for f in body["files"]]
        after = body["next"]
        if after is None:
            break
    assert seen == [f"{i:02}.jpg" for i in range(5)]
    bad = client.get("/api/sources/portraits/files?limit=0", headers=admin_auth)
    assert bad.status_code == 400


def test_workers_cannot_manage_sources(client, worker, admin_auth):
    assert client.post("/api/sources", json=SOURCE, headers=worker).status_code == 403
    assert client.get("/api/sources/next").status_code == 401
