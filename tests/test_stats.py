"""GET /stats: the original's lines, JSON on request, counts served from a snapshot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from factories import make_albums

from app.stats import SNAPSHOT_ID, format_stats_text, get_stats
from app.store.events import site_of
from app.timeutil import iso
from scheduler import jobs

PTH = "https://pth.example/"
JSON = {"Accept": "application/json"}


def stats_json(client):
    response = client.get("/stats", headers=JSON)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def lease_one(client, worker):
    [album] = client.get("/metadata/1", headers=worker).get_json()["albums"]
    return album["id"]


def test_counts_follow_a_metadata_and_download_workflow(client, db, worker, clock):
    # three albums imported; the first /stats computes the snapshot itself
    make_albums(db, 3, now=clock())
    stats = stats_json(client)
    assert stats["albums"] == 3
    assert stats["dispatches"] == {"stale": 0, "active": 0}
    assert stats["requests"] == {"filled": 0, "total": 0}
    assert stats["queues"]["metadata"]["ready"] == 3
    assert stats["as_of"] == iso(clock())

    # two albums leased half an hour apart; an hour after the first lease,
    # the first is stale (expired, not yet reaped) and the second still active
    lease_one(client, worker)
    clock.advance(minutes=30)
    second = lease_one(client, worker)
    assert stats_json(client)["dispatches"] == {"stale": 0, "active": 2}
    clock.advance(minutes=31)
    assert stats_json(client)["dispatches"] == {"stale": 1, "active": 1}

    # the reaper returns the stale lease to the queue
    assert jobs.reap_expired_leases(db, clock()) == 1
    assert stats_json(client)["dispatches"] == {"stale": 0, "active": 1}

    # the second album's torrent is found: one download request, not filled yet
    found = {str(second): [{"site": PTH, "torrentId": 37}]}
    assert client.post("/metadata/submit", json=found, headers=worker).status_code == 200
    jobs.snapshot_stats(db, clock())
    stats = stats_json(client)
    assert stats["dispatches"] == {"stale": 0, "active": 0}
    assert stats["requests"] == {"filled": 0, "total": 1}
    assert stats["queues"]["download:pth.example"]["ready"] == 1
    assert stats["queues"]["metadata"] == {"ready": 2, "leased": 0, "found": 1}

    # the download lands: the request is filled
    landed = {"/data/x": [{"site": PTH, "torrentId": 37}]}
    assert client.post("/torrents/submit", json=landed, headers=worker).status_code == 200
    jobs.snapshot_stats(db, clock())
    stats = stats_json(client)
    assert stats["requests"] == {"filled": 1, "total": 1}
    assert stats["queues"]["download:pth.example"] == {"ready": 0, "leased": 0, "done": 1}

    # the HTML page shows the original's lines
    page = client.get("/stats").get_data(as_text=True)
    assert "Albums: 3" in page
    assert "Metadata dispatches: 0 stale, 0 active" in page
    assert "Requests: 1/1 filled" in page
    assert f"As of: {iso(clock())}" in page


def test_a_lease_expiring_exactly_now_is_stale_as_the_reaper_counts_it(client, db, worker, clock):
    make_albums(db, 1, now=clock())
    lease_one(client, worker)
    clock.advance(hours=1)  # the metadata lease lasts exactly one hour
    assert get_stats(db, clock())["dispatches"] == {"stale": 1, "active": 0}
    assert jobs.reap_expired_leases(db, clock()) == 1


def test_download_leases_are_not_metadata_dispatches(client, db, worker, clock):
    [album] = make_albums(db, 1, now=clock())
    found = {str(album): [{"site": PTH, "torrentId": 37}]}
    assert client.post("/metadata/submit", json=found, headers=worker).status_code == 200
    leased = client.post("/torrents", data={"site": PTH, "rows": "5"}, headers=worker)
    assert len(leased.get_json()["torrents"]) == 1
    assert stats_json(client)["dispatches"] == {"stale": 0, "active": 0}


def test_the_snapshot_serves_counts_until_the_job_refreshes_it(client, db, clock):
    make_albums(db, 2, now=clock())
    assert db.get_or_none(SNAPSHOT_ID) is None
    first = stats_json(client)
    assert first["albums"] == 2
    assert db.get_or_none(SNAPSHOT_ID) is not None  # stored by the first call

    # new albums arrive; /stats keeps serving the snapshot, and says how old it is
    make_albums(db, 3, now=clock(), title="More {i}")
    clock.advance(minutes=1)
    assert stats_json(client) == first

    # the scheduler's job refreshes it
    jobs.snapshot_stats(db, clock())
    refreshed = stats_json(client)
    assert refreshed["albums"] == 5
    assert refreshed["as_of"] == iso(clock())


def test_an_older_snapshot_never_replaces_a_newer_one(db, clock):
    make_albums(db, 1, now=clock())
    newer = clock.advance(minutes=5)
    jobs.snapshot_stats(db, newer)
    make_albums(db, 1, now=clock(), title="Late {i}")
    kept = jobs.snapshot_stats(db, newer.replace(minute=0))
    assert kept["as_of"] == iso(newer)
    assert db.get(SNAPSHOT_ID)["types"]["album"] == {"ready": 1}


@pytest.mark.parametrize(
    ("headers", "query", "mimetype"),
    [
        ({}, "", "text/html"),
        ({"Accept": "*/*"}, "", "text/html"),
        (
            {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
            "",
            "text/html",
        ),
        ({"Accept": "application/json"}, "", "application/json"),
        ({"Accept": "application/json, text/html;q=0.5"}, "", "application/json"),
        ({"Accept": "text/plain"}, "", "text/plain"),
        ({"Accept": "image/png"}, "", "text/html"),
        ({}, "?format=json", "application/json"),
        ({"Accept": "application/json"}, "?format=html", "text/html"),
        ({}, "?format=text", "text/plain"),
    ],
)
def test_format_follows_accept_or_the_format_parameter(client, db, clock, headers, query, mimetype):
    make_albums(db, 1, now=clock())
    response = client.get("/stats" + query, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert "Accept" in response.headers.get("Vary", "")
    if mimetype == "application/json":
        assert response.get_json()["albums"] == 1
    else:
        assert "Albums: 1" in response.get_data(as_text=True)


def test_an_unknown_format_is_refused(client):
    response = client.get("/stats?format=xml")
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_failed"


def test_stats_need_no_credentials_and_work_on_an_empty_database(client):
    stats = stats_json(client)
    assert stats["albums"] == 0
    assert stats["requests"] == {"filled": 0, "total": 0}
    assert stats["queues"] == {}


def test_text_format_is_the_html_body_lines(client, db, clock):
    make_albums(db, 2, now=clock())
    text = client.get("/stats?format=text").get_data(as_text=True)
    assert text.startswith(format_stats_text(get_stats(db, clock())) + "\n")
    assert text.splitlines() == [
        "Albums: 2",
        "Metadata dispatches: 0 stale, 0 active",
        "Requests: 0/0 filled",
        f"As of: {iso(clock())}",
        f"Site: {site_of(db)}",
    ]


def test_stats_name_this_site_and_show_each_other_sites_lag(make_app, db, clock):
    """An operator sees at a glance which site answers and how far behind the others are."""
    app = make_app(
        site={"name": "alpha"},
        sites={
            "beta": {"url": "http://127.0.0.1:9/beta_events", "direction": "push"},
            "gamma": {"url": "http://127.0.0.1:9/gamma_events"},
        },
    )
    client = app.test_client()
    db.put(
        {
            "_id": "_local/site:beta",
            "flows": {
                "push": {
                    "state": "running",
                    "last_attempt": iso(clock()),
                    "last_success": iso(clock() - timedelta(seconds=30)),
                    "pending": 12,
                }
            },
        }
    )
    stats = client.get("/stats?format=json").get_json()
    assert stats["site"] == "alpha"
    assert stats["sites"]["beta"] == {
        "state": "running",
        "push": {"pending": 12, "seconds_since_success": 30.0},
    }
    never = {"pending": None, "seconds_since_success": None}
    assert stats["sites"]["gamma"] == {"state": "stopped", "push": never, "pull": never}
    lines = client.get("/stats?format=text").get_data(as_text=True).splitlines()
    assert lines[-3:] == [
        "Site: alpha",
        "Site beta: running; push 12 pending, last success 30 s ago",
        "Site gamma: stopped; push unknown pending, last success never; "
        "pull unknown pending, last success never",
    ]


def test_while_indexes_warm_stats_answers_from_what_is_there(client, db, worker, clock):
    """/stats must never wait for an index to build: while `distleech run` warms
    them it counts nothing afresh and says the indexes are warming."""
    make_albums(db, 3, now=clock())
    client.get("/metadata/2", headers=worker)
    warming = {"state": "warming", "warm": 2, "total": 13, "current": "main/queues/ready"}
    db.put({"_id": "_local/warming", **warming, "at": "2026-01-01T12:00:00Z"})
    body = client.get("/stats?format=json").get_json()
    assert body["indexes"]["state"] == "warming"
    assert body["as_of"] is None and body["albums"] == 0  # no snapshot computed meanwhile
    assert db.get_or_none(SNAPSHOT_ID) is None
    assert "Indexes: warming, 2 of 13 warm" in client.get("/stats?format=text").get_data(True)
    # once warm, the figures are counted again
    db.put({**db.get("_local/warming"), "state": "warm", "warm": 13})
    body = client.get("/stats?format=json").get_json()
    assert body["albums"] == 3 and body["dispatches"] == {"stale": 0, "active": 2}


def test_stats_answers_while_the_leases_index_is_being_built(
    client, db, worker, clock, monkeypatch
):
    """After a big import the leases index may need minutes: /stats answers with the
    counts as indexed instead of waiting (the issue saw it hang, then 503)."""
    from app import stats

    make_albums(db, 3, now=clock())
    client.get("/metadata/2", headers=worker)
    monkeypatch.setattr(stats, "LIVE_SECONDS", 1e-6)  # the index cannot answer in time
    response = client.get("/stats?format=json")
    assert response.status_code == 200
    assert set(response.get_json()["dispatches"]) == {"stale", "active"}
    monkeypatch.undo()  # once it answers in time, the counts are live again
    assert client.get("/stats?format=json").get_json()["dispatches"]["active"] == 2
