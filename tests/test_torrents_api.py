"""The original distleech_server download queue (/torrents), against the real bundled server."""

from __future__ import annotations

import pytest
from conftest import token_header
from factories import PTH, db_snapshot, event_ids, make_download_task

from app.accounts.auth import issue_token
from app.queues.downloads import public_task_ref, task_doc_id
from app.queues.leasing import reap_expired_leases

OPS = "orpheus.network"


def lease(client, headers, site=PTH, rows="100"):
    response = client.post("/torrents", data={"site": site, "rows": rows}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def torrent_ids(leased):
    return [t["siteTorrentId"] for t in leased["torrents"]]


def test_lease_hands_out_one_site_only(client, db, worker, clock):
    for torrent_id in (1, 2, 3):
        make_download_task(db, torrent_id, now=clock())
    make_download_task(db, 9, now=clock(), host=OPS)
    leased = lease(client, worker, site="https://PassTheHeadphones.me/", rows="2")
    assert leased["site"] == PTH
    assert sorted(torrent_ids(leased)) in ([1, 2], [1, 3], [2, 3])
    assert (
        leased["torrents"][0]["id"]
        == public_task_ref(PTH, leased["torrents"][0]["siteTorrentId"])["id"]
    )
    # the rest of the site, then nothing: a leased task is not handed out twice
    assert len(torrent_ids(lease(client, worker))) == 1
    assert lease(client, worker) == {"site": PTH, "torrents": []}
    assert torrent_ids(lease(client, worker, site=OPS)) == [9]
    assert db.get(task_doc_id(PTH, 1))["lease"]["holder"] == "worker-1"


def test_lease_is_capped_at_max_rows(client, db, worker, clock):
    for torrent_id in range(1, 106):
        make_download_task(db, torrent_id, now=clock())
    assert len(lease(client, worker, rows="500")["torrents"]) == 100
    assert len(lease(client, worker, rows="500")["torrents"]) == 5


def test_expired_download_lease_returns_after_download_days(client, db, worker, clock):
    make_download_task(db, 5, now=clock())
    assert torrent_ids(lease(client, worker)) == [5]
    clock.advance(days=14, minutes=-1)
    assert reap_expired_leases(db, clock()) == 0
    clock.advance(minutes=2)
    assert reap_expired_leases(db, clock()) == 1
    assert torrent_ids(lease(client, worker)) == [5]


def test_submit_marks_done_and_records_a_move(client, db, worker, clock):
    make_download_task(db, 5, now=clock())
    lease(client, worker)
    ref = [{"site": PTH, "torrentId": 5}]
    response = client.post("/torrents/submit", json={"/ingest/a": ref}, headers=worker)
    assert response.status_code == 200
    assert response.get_json() == {
        "accepted": 1,
        "rejected": 0,
        "paths": {"/ingest/a": [{"site": PTH, "torrentId": 5, "status": "filled"}]},
    }
    task = db.get(task_doc_id(PTH, 5))
    assert (task["state"], task["path"], task["lease"]) == ("done", "/ingest/a", None)
    # the same path again writes nothing
    events = event_ids(db)
    assert (
        client.put("/torrents/submit", json={"/ingest/a": ref}, headers=worker).status_code == 200
    )
    assert event_ids(db) == events
    # another path records where the files moved
    assert (
        client.put("/torrents/submit", json={"/archive/a": ref}, headers=worker).status_code == 200
    )
    assert db.get(task_doc_id(PTH, 5))["path"] == "/archive/a"
    assert lease(client, worker)["torrents"] == []


def test_submit_reports_unknown_and_duplicate_entries(client, db, worker, clock):
    make_download_task(db, 5, now=clock())
    body = {
        "/ingest/a": [{"site": PTH, "torrentId": 5}, {"site": PTH, "torrentId": 6}],
        "/ingest/b": [{"site": f"https://{PTH}/", "torrentId": 5}],
    }
    response = client.post("/torrents/submit", json=body, headers=worker)
    assert response.status_code == 200
    paths = response.get_json()["paths"]
    assert [e.get("error") for e in paths["/ingest/a"]] == ["invalid_entry", "unknown_task"]
    assert paths["/ingest/b"] == [{"site": PTH, "torrentId": 5, "status": "filled"}]
    assert db.get(task_doc_id(PTH, 5))["path"] == "/ingest/b"
    assert db.get_or_none(task_doc_id(PTH, 6)) is None


def test_a_second_worker_gets_other_tasks(client, db, worker, clock):
    other = token_header(issue_token(db, "worker-2", "worker", actor="test", now=clock()))
    for torrent_id in (1, 2):
        make_download_task(db, torrent_id, now=clock())
    first = torrent_ids(lease(client, worker, rows="1"))
    second = torrent_ids(lease(client, other, rows="1"))
    assert sorted(first + second) == [1, 2]
    assert db.get(task_doc_id(PTH, second[0]))["lease"]["holder"] == "worker-2"


# ---------------------------------------------------------------- bad input changes nothing


@pytest.fixture
def unchanged(db, clock, worker):
    make_download_task(db, 5, now=clock())
    before, events = db_snapshot(db), event_ids(db)

    def check():
        assert event_ids(db) == events
        assert db_snapshot(db) == before

    return check


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"rows": "5"}, "validation_failed"),
        ({"site": "", "rows": "5"}, "validation_failed"),
        ({"site": "not a site", "rows": "5"}, "validation_failed"),
        ({"site": "https://", "rows": "5"}, "validation_failed"),
        ({"site": "http://[::1", "rows": "5"}, "validation_failed"),
        ({"site": "%%%", "rows": "5"}, "validation_failed"),
        ({"site": PTH}, "invalid_rows"),
        ({"site": PTH, "rows": "0"}, "invalid_rows"),
        ({"site": PTH, "rows": "-1"}, "invalid_rows"),
        ({"site": PTH, "rows": "abc"}, "invalid_rows"),
        ({"site": PTH, "rows": ""}, "invalid_rows"),
        ({"site": PTH, "rows": "²"}, "invalid_rows"),
    ],
)
def test_lease_refuses_bad_forms(client, worker, unchanged, form, code):
    response = client.post("/torrents", data=form, headers=worker)
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    unchanged()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("nope", "invalid_json"),
        ("[]", "validation_failed"),
        ("{}", "validation_failed"),
        ('{"/p": []}', "no_valid_entries"),
        ('{"/p": {"site": "pth.me", "torrentId": 5}}', "no_valid_entries"),
        ('{"/p": [{"site": "pth.me"}]}', "no_valid_entries"),
        ('{" ": [{"site": "passtheheadphones.me", "torrentId": 5}]}', "no_valid_entries"),
        ('{"/p": [{"site": "passtheheadphones.me", "torrentId": 6}]}', "no_valid_entries"),
    ],
)
def test_submit_refuses_bad_bodies(client, worker, unchanged, body, code):
    response = client.post(
        "/torrents/submit", data=body, content_type="application/json", headers=worker
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    unchanged()
