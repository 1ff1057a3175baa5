"""The dashboard at / and the inventory pages, through Flask's test client."""

from __future__ import annotations

import re
from html import unescape

import pytest
from factories import album_id_for, make_albums
from test_api_sites import SITES, store_status

from app import stats
from app.accounts.auth import add_user
from app.tracker.accounts import tracker_user_doc_id
from app.tracker.members import register_user
from scheduler import jobs

PASSWORD = "correct horse battery"
PTH = "https://passtheheadphones.me/"
JSON = {"Accept": "application/json"}
HTMX = {"HX-Request": "true"}


@pytest.fixture
def member(db, clock):
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    return "alice"


def log_in(client, name="alice"):
    response = client.post("/login", data={"name": name, "password": PASSWORD})
    assert response.status_code == 303


def page_text(html: str) -> str:
    """What a person reads: the page without tags, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def queue_cells(html: str) -> dict[tuple[str, str], int]:
    found = re.findall(r'data-queue="([^"]+)" data-state="([^"]+)" data-count="(\d+)"', html)
    return {(queue, state): int(count) for queue, state, count in found}


def lease_and_find(client, worker, rows: int, found: int):
    """A metadata worker leases `rows` albums and reports a torrent for the first `found`."""
    albums = client.get(f"/metadata/{rows}", headers=worker).get_json()["albums"]
    body = {str(a["id"]): [{"site": PTH, "torrentId": 100 + i}] for i, a in enumerate(albums)}
    body = dict(list(body.items())[:found])
    if body:
        assert client.post("/metadata/submit", json=body, headers=worker).status_code == 200
    return albums


# ---------------------------------------------------------------- who may look


@pytest.mark.parametrize("path", ["/", "/inventory", "/inventory/1"])
def test_anonymous_people_are_sent_to_log_in_first(client, path):
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/dashboard/events", "/dashboard/throughput.json"])
def test_the_live_parts_answer_anonymous_callers_401_without_data(client, db, clock, path):
    make_albums(db, 2, now=clock(), artist="Secret Artist")
    response = client.get(path, headers=HTMX)
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2F"  # htmx sends the tab to log in
    assert "Secret Artist" not in response.get_data(as_text=True)
    assert "imported" not in response.get_data(as_text=True)


# ---------------------------------------------------------------- queue counts


def test_the_dashboard_shows_the_queue_counts_that_stats_json_gives(
    client, db, clock, member, worker
):
    # five albums: three leased, of which two found a torrent (two download tasks)
    make_albums(db, 5, now=clock())
    lease_and_find(client, worker, 3, found=2)
    jobs.snapshot_stats(db, clock())
    log_in(client)

    html = client.get("/").get_data(as_text=True)
    api = client.get("/stats", headers=JSON).get_json()

    cells = queue_cells(html)
    for queue, states in api["queues"].items():
        for state, count in states.items():
            assert cells[(queue, state)] == count, (queue, state)
    # a state a queue does not report is shown as 0, never as some other number
    assert all(cells[key] == 0 for key in cells if key[1] not in api["queues"][key[0]])
    assert cells[("metadata", "ready")] == 2
    assert cells[("metadata", "leased")] == 1
    assert cells[("metadata", "found")] == 2
    assert cells[("download:passtheheadphones.me", "ready")] == 2
    assert re.search(r'data-stat="albums">5<', html)
    text = page_text(html)
    assert "metadata: 2 of 5 finished" in html and "40%" in text


def test_before_any_snapshot_the_dashboard_counts_once_like_stats(client, db, clock, member):
    make_albums(db, 2, now=clock())
    log_in(client)
    html = client.get("/").get_data(as_text=True)
    assert queue_cells(html)[("metadata", "ready")] == 2
    assert "Counts as of" in page_text(html)


# ---------------------------------------------------------------- events


def test_recent_events_say_who_did_what_newest_first(client, db, clock, member, worker):
    make_albums(db, 3, now=clock())
    clock.advance(seconds=5)
    lease_and_find(client, worker, 2, found=0)
    log_in(client)

    text = page_text(client.get("/").get_data(as_text=True))
    leased = text.index("worker-1 leased 2 albums")
    imported = text.index("test imported 3 albums")
    assert leased < imported  # newest first
    assert "12:00:05 UTC" in text


def test_the_events_fragment_answers_204_until_something_new_happens(
    client, db, clock, member, worker
):
    make_albums(db, 1, now=clock(), artist="Joni Mitchell", title="Blue")
    log_in(client)
    html = client.get("/").get_data(as_text=True)
    poll = unescape(re.search(r'hx-get="([^"]+)"', html)[1])

    # nothing new: no content, so htmx leaves the list alone
    assert client.get(poll, headers=HTMX).status_code == 204

    # a worker leases the album: the next poll brings the new list, linked to the album
    clock.advance(seconds=1)
    client.get("/metadata/1", headers=worker)
    response = client.get(poll, headers=HTMX)
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert "worker-1 leased 1 album" in page_text(fragment)
    album_id = album_id_for("Joni Mitchell", "Blue")
    assert f'href="/inventory/{album_id}"' in fragment
    assert 'hx-trigger="every 5s"' in fragment  # and it keeps polling


def test_events_never_show_what_they_carry(client, db, clock, member):
    # an account's events carry data (hashes, names); the feed says only that it happened
    add_user(db, "bob", "another fine password", admin=False, actor="root", now=clock())
    log_in(client)
    text = page_text(client.get("/").get_data(as_text=True))
    assert "root created 1 account" in text
    assert "pbkdf2" not in text and "hash" not in text


# ---------------------------------------------------------------- throughput


def test_throughput_is_finished_work_per_hour_between_snapshots(client, db, clock, member, worker):
    make_albums(db, 6, now=clock())
    jobs.snapshot_stats(db, clock())
    # one minute later the job runs again: too soon for another point of the chart
    clock.advance(minutes=1)
    jobs.snapshot_stats(db, clock())
    assert len(stats.get_history(db)) == 1

    # three albums found within the next 9 minutes: 3 in 10 minutes = 18 an hour
    lease_and_find(client, worker, 3, found=3)
    clock.advance(minutes=9)
    jobs.snapshot_stats(db, clock())
    log_in(client)

    chart = client.get("/dashboard/throughput.json").get_json()
    assert len(chart["times"]) == 1
    metadata = next(s for s in chart["series"] if s["kind"] == "metadata")
    assert metadata["values"] == [18.0]
    assert metadata["label"] == "metadata done per hour"
    # without JavaScript the same figure is in the table under the chart
    text = page_text(client.get("/").get_data(as_text=True))
    assert "Until download done per hour metadata done per hour" in text
    assert "2026-01-01 12:10 UTC 0.0 18.0" in text  # no download was filled


def test_history_keeps_two_days_of_points(db, clock):
    make_albums(db, 1, now=clock())
    for _ in range(60):
        jobs.snapshot_stats(db, clock())
        clock.advance(hours=1)
    points = stats.get_history(db)
    assert len(points) == 49  # 48 hours back from the last, both ends included
    assert points[-1]["at"] == "2026-01-03T23:00:00.000000Z"  # the 60th hourly snapshot
    assert points[0]["at"] == "2026-01-01T23:00:00.000000Z"


def test_without_history_the_dashboard_says_why_there_is_no_chart(client, db, clock, member):
    log_in(client)
    text = page_text(client.get("/").get_data(as_text=True))
    assert "No throughput to show yet" in text
    assert client.get("/dashboard/throughput.json").get_json() == {"times": [], "series": []}


# ---------------------------------------------------------------- workers, members, sites


def test_workers_show_online_first_with_their_last_heartbeat(client, clock, member, worker):
    client.post("/api/worker/heartbeat", data={"name": "old-box", "status": "idle"}, headers=worker)
    clock.advance(minutes=30)
    client.post(
        "/api/worker/heartbeat", data={"name": "worker-1", "status": "archiving"}, headers=worker
    )
    clock.advance(seconds=20)
    log_in(client)
    text = page_text(client.get("/").get_data(as_text=True))
    assert "worker-1 online 20 s ago" in text and "archiving" in text
    assert "old-box offline 30 min ago" in text
    assert text.index("worker-1 online") < text.index("old-box offline")


def test_members_are_ranked_by_what_they_uploaded(client, db, clock, member):
    for user_id, name, uploaded in [(1, "small", 10), (2, "big", 5 * 2**30), (3, "mid", 2**20)]:
        register_user(db, user_id, name=name, actor="test", now=clock())
        doc = db.get(tracker_user_doc_id(user_id))
        db.put({**doc, "uploaded": uploaded})  # as the tracker's tallies leave it
    jobs.snapshot_stats(db, clock())
    log_in(client)
    text = page_text(client.get("/").get_data(as_text=True))
    assert "big : 5.0 GiB up" in text
    assert text.index("big :") < text.index("mid :") < text.index("small :")


def test_sites_show_their_lag_and_only_admins_read_the_last_error(make_app, db, clock, member):
    client = make_app(site={"name": "alpha"}, sites=SITES).test_client()
    store_status(db, clock())
    add_user(db, "root", PASSWORD, admin=True, actor="test", now=clock())

    log_in(client)
    text = page_text(client.get("/").get_data(as_text=True))
    assert "This site: alpha" in text
    assert "push: 0 events pending, last success 0 s ago" in text
    assert "pull: unknown events pending, last success 60 min ago" in text
    assert "gamma" in text and "stopped" in text  # never attempted
    assert "Connection refused" not in text

    admin = make_app(site={"name": "alpha"}, sites=SITES).test_client()
    log_in(admin, "root")
    assert "Connection refused" in page_text(admin.get("/").get_data(as_text=True))


# ---------------------------------------------------------------- inventory


def test_inventory_lists_albums_and_filters_them_by_state(client, db, clock, member, worker):
    make_albums(db, 4, now=clock(), artist="Cockburn, Bruce")
    leased = lease_and_find(client, worker, 1, found=0)
    log_in(client)

    everything = client.get("/inventory").get_data(as_text=True)
    assert len(re.findall(r"data-album=", everything)) == 4
    assert "Albums 1 to 4" in page_text(everything)

    only_leased = client.get("/inventory?state=leased").get_data(as_text=True)
    assert re.findall(r'data-album="(\d+)"', only_leased) == [str(leased[0]["id"])]


def test_inventory_search_matches_words_of_artist_and_title(client, db, clock, member):
    make_albums(db, 3, now=clock(), artist="Cockburn, Bruce", title="Night Vision {i}")
    make_albums(db, 2, now=clock(), artist="Mitchell, Joni", title="Blue {i}", start_line=10)
    log_in(client)

    html = client.get("/inventory?q=joni+BLUE").get_data(as_text=True)
    assert sorted(re.findall(r'data-album="(\d+)"', html)) == sorted(
        str(album_id_for("Mitchell, Joni", f"Blue {i}")) for i in range(2)
    )
    assert "2 albums matched among the 5 read" in page_text(html)
    assert "0 albums matched" in page_text(client.get("/inventory?q=zappa").get_data(as_text=True))


def test_inventory_pages_on_past_fifty_albums(client, db, clock, member):
    make_albums(db, 55, now=clock())
    log_in(client)
    first = client.get("/inventory").get_data(as_text=True)
    assert len(re.findall(r"data-album=", first)) == 50
    next_link = unescape(re.search(r'rel="next" href="([^"]+)"', first)[1])
    second = client.get(next_link).get_data(as_text=True)
    assert len(re.findall(r"data-album=", second)) == 5
    assert "Albums 51 to 55" in page_text(second)
    assert 'rel="next"' not in second


def test_a_wrong_state_is_said_in_words(client, member):
    log_in(client)
    response = client.get("/inventory?state=lost")
    assert response.status_code == 400
    assert "Choose a state from the list." in page_text(response.get_data(as_text=True))


def test_an_albums_page_tells_its_history_in_words(client, db, clock, member, worker):
    [album_id] = make_albums(db, 1, now=clock(), artist="Mitchell, Joni", title="Blue")
    clock.advance(minutes=1)
    lease_and_find(client, worker, 1, found=1)
    log_in(client)

    response = client.get(f"/inventory/{album_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<title>Mitchell, Joni – Blue · distleech</title>" in html
    text = page_text(html)
    assert "Torrents found (found)" in text
    assert "Imported into the inventory as Mitchell, Joni – Blue." in text
    assert "worker-1 : Leased to worker-1 until 2026-01-01 13:01 UTC." in text
    assert "worker-1 : Found 1 torrent: passtheheadphones.me #100." in text
    assert "passtheheadphones.me 100 ready" in text  # its download task, waiting for a seedbox


def test_an_unknown_album_is_a_404_page_in_words(client, member):
    log_in(client)
    response = client.get("/inventory/12345")
    assert response.status_code == 404
    assert "No album has the id 12345." in page_text(response.get_data(as_text=True))
