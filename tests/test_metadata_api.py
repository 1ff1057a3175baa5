"""The original distleech_server metadata queue, over HTTP, against the real bundled server."""

from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from conftest import token_header
from factories import PTH, db_snapshot, event_ids, get_album, ids_of, make_albums

from app.accounts.auth import issue_token
from app.queues import candidates, leasing
from app.queues.albums import album_doc_id, lease_albums, submit_metadata
from app.queues.downloads import task_doc_id
from app.queues.leasing import QueueLeaser, reap_expired_leases

RETRY_MINUTES = 24 * 60  # leases.retry_minutes default
README_SUBMIT = '{"111": [{"site":"https://passtheheadphones.me/", "torrentId":37}], "444":[]}'


def lease(client, headers, rows):
    response = client.get(f"/metadata/{rows}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["albums"]


def submit(client, headers, body):
    return client.post("/metadata/submit", json=body, headers=headers)


# ---------------------------------------------------------------- the README's curl flow


def test_readme_curl_flow_works_unauthenticated_on_a_trusted_network(make_app, db, clock):
    """Each curl example of the original README, verbatim but for the album ids."""
    client = make_app(auth={"anonymous_workers": True}).test_client()
    found_id, missing_id = make_albums(db, 2, now=clock())

    # $ curl http://localhost:5000/metadata/2
    response = client.get("/metadata/2")
    assert response.status_code == 200
    assert response.get_json() == {
        "albums": [
            {"album": "Album 0", "id": found_id, "sortArtist": "Cockburn, Bruce"},
            {"album": "Album 1", "id": missing_id, "sortArtist": "Cockburn, Bruce"},
        ]
    }
    assert list(response.get_json()["albums"][0]) == ["album", "id", "sortArtist"]

    # $ curl -H "Content-type: application/json" -X POST .../metadata/submit -d '{"111": ...}'
    # with the README's ids 111 and 444 swapped for ours, plus the unknown 111 again
    body = README_SUBMIT.replace('"111"', f'"{found_id}"').replace(
        '"444":[]', f'"{missing_id}":[], "111": [{{"site":"{PTH}", "torrentId":38}}]'
    )
    response = client.post(
        "/metadata/submit", data=body, headers={"Content-type": "application/json"}
    )
    assert response.status_code == 200
    report = response.get_json()
    assert report["accepted"] == 2 and report["rejected"] == 1
    assert report["albums"][str(found_id)]["status"] == "found"
    assert report["albums"][str(missing_id)]["status"] == "not_found"
    # an unknown id is reported on its own entry while the rest is applied
    assert report["albums"]["111"]["error"] == "unknown_album"
    assert get_album(db, found_id)["state"] == "found"
    assert get_album(db, missing_id)["not_found"] == 1

    # $ curl -X POST http://localhost:5000/torrents -d 'site=https://passtheheadphones.me&rows=5'
    response = client.post(
        "/torrents",
        data="site=https://passtheheadphones.me&rows=5",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    leased = response.get_json()
    assert leased["site"] == "passtheheadphones.me"
    assert [t["siteTorrentId"] for t in leased["torrents"]] == [37]
    assert set(leased["torrents"][0]) == {"id", "siteTorrentId"}
    # the torrent of the unknown album 111 never became a task
    assert db.get_or_none(task_doc_id(PTH, 38)) is None

    # GET /torrents is refused with a JSON 405
    response = client.get("/torrents")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"

    # torrent submission marks the download done with its local path
    response = client.put(
        "/torrents/submit",
        json={"/local/path": [{"site": "https://passtheheadphones.me/", "torrentId": 37}]},
    )
    assert response.status_code == 200
    assert response.get_json()["paths"]["/local/path"][0]["status"] == "filled"
    task = db.get(task_doc_id(PTH, 37))
    assert (task["state"], task["path"]) == ("done", "/local/path")
    assert task["lease"] is None
    # a done task is never handed out again
    again = client.post("/torrents", data={"site": PTH, "rows": "5"})
    assert again.get_json() == {"site": PTH, "torrents": []}


def test_anonymous_workers_are_off_by_default(client, db, clock):
    make_albums(db, 1, now=clock())
    response = client.get("/metadata/2")
    assert response.status_code == 401
    assert response.get_json()["error"] == "authentication_required"


# ---------------------------------------------------------------- queue semantics


def test_never_tried_first_then_least_recently_not_found(client, db, worker, clock):
    first, second = make_albums(db, 2, now=clock())
    assert sorted(ids_of(lease(client, worker, 2))) == sorted([first, second])
    # `second` is not found a minute before `first`
    clock.advance(minutes=1)
    assert submit(client, worker, {str(second): []}).status_code == 200
    clock.advance(minutes=1)
    assert submit(client, worker, {str(first): []}).status_code == 200
    # a new album arrives while both wait for their retry
    [newer] = make_albums(db, 1, now=clock(), title="Newer {i}")
    assert ids_of(lease(client, worker, 5)) == [newer]
    assert lease(client, worker, 5) == []
    # once both are due, an even newer never-tried album still comes first
    clock.advance(minutes=RETRY_MINUTES)
    [newest] = make_albums(db, 1, now=clock(), title="Newest {i}")
    assert ids_of(lease(client, worker, 5)) == [newest, second, first]


def test_a_process_lease_slot_never_puts_retries_before_never_tried_work(db, clock):
    """With several processes each prefers its own slot of ids, but only within a group."""
    leaser = QueueLeaser(db, lease_slot=0, lease_slots=2)

    def slot(album_id):
        return zlib.crc32(album_doc_id(album_id).encode()) % 2

    ids = make_albums(db, 12, now=clock())
    retry = next(a for a in ids if slot(a) == 0)
    assert lease_albums(leaser, "w", 12, clock(), 60)
    submit_metadata(db, {retry: []}, holder="w", now=clock(), retry_minutes=1)
    clock.advance(minutes=5)
    # two never-tried albums of the other process's slot arrive; the retry of ours is due
    fresh = [a for a in make_albums(db, 12, now=clock(), title="New {i}") if slot(a) == 1][:2]
    assert len(fresh) == 2
    leased = ids_of(lease_albums(leaser, "w", 30, clock(), 60))
    assert leased.index(retry) == len(leased) - 1
    assert set(fresh) <= set(leased)


def test_a_process_sees_what_others_did_at_its_next_call(db, clock):
    """Each process reads the queue view once and then follows the changes feed:
    work another process leased, returned or added reaches its next call."""
    here, there = QueueLeaser(db), QueueLeaser(db)
    first, second, third = make_albums(db, 3, now=clock())
    assert ids_of(lease_albums(here, "h", 1, clock(), 60)) == [first]
    assert ids_of(lease_albums(there, "t", 1, clock(), 60)) == [second]
    # the other process's lease of `second` is known here: never handed out twice
    assert ids_of(lease_albums(here, "h", 5, clock(), 60)) == [third]
    assert lease_albums(here, "h", 5, clock(), 60) == []
    # elsewhere: `second` not found (due again at once), and two albums imported
    submit_metadata(db, {second: []}, holder="t", now=clock(), retry_minutes=0)
    new = make_albums(db, 2, now=clock(), title="New {i}")
    assert ids_of(lease_albums(here, "h", 5, clock(), 60)) == [*new, second]
    assert lease_albums(there, "t", 5, clock(), 60) == []


def test_not_found_album_comes_back_only_after_retry_minutes(make_app, db, worker, clock):
    client = make_app(leases={"retry_minutes": 30}).test_client()
    [album] = make_albums(db, 1, now=clock())
    lease(client, worker, 1)
    response = submit(client, worker, {str(album): []})
    assert response.get_json()["albums"][str(album)]["status"] == "not_found"
    clock.advance(minutes=29)
    assert lease(client, worker, 1) == []
    clock.advance(minutes=1)
    assert ids_of(lease(client, worker, 1)) == [album]


def test_found_torrent_becomes_one_download_task(client, db, worker, clock):
    a, b, c = make_albums(db, 3, now=clock())
    pth37 = {"site": "https://passtheheadphones.me/", "torrentId": 37}
    # two albums of one submission name the same torrent, listed twice by one of them
    response = submit(client, worker, {str(a): [pth37, pth37], str(b): [pth37]})
    assert response.status_code == 200
    # a later submission names it by bare hostname and as a string id
    response = submit(
        client, worker, {str(c): [{"site": "PassTheHeadphones.me", "torrentId": "37"}]}
    )
    assert response.status_code == 200
    assert response.get_json()["albums"][str(c)]["downloads"] == [
        {"id": db.get(task_doc_id(PTH, 37))["id"], "site": PTH, "torrentId": 37}
    ]
    task = db.get(task_doc_id(PTH, 37))
    assert (task["site"], task["siteTorrentId"], sorted(task["albums"])) == (
        PTH,
        37,
        sorted([a, b, c]),
    )
    assert get_album(db, a)["torrents"] == [{"site": PTH, "torrentId": 37}]
    leased = client.post("/torrents", data={"site": PTH, "rows": "100"}, headers=worker)
    assert leased.get_json()["torrents"] == [{"id": task["id"], "siteTorrentId": 37}]


@pytest.mark.parametrize("rows", ["100", "101", "1000"])
def test_rows_are_capped_at_max_rows(client, db, worker, clock, rows):
    make_albums(db, 120, now=clock())
    assert len(lease(client, worker, rows)) == 100
    assert len(lease(client, worker, rows)) == 20


def test_leading_zeros_are_just_a_number(client, db, worker, clock):
    make_albums(db, 3, now=clock())
    assert len(lease(client, worker, "0" * 5000 + "2")) == 2


def test_max_rows_is_configurable(make_app, db, worker, clock):
    client = make_app(leases={"max_rows": 3}).test_client()
    make_albums(db, 5, now=clock())
    assert len(lease(client, worker, 100)) == 3


def test_expired_lease_is_handed_out_again_after_the_reaper(app, client, db, worker, clock):
    [album] = make_albums(db, 1, now=clock())
    assert ids_of(lease(client, worker, 1)) == [album]
    clock.advance(minutes=59)
    assert reap_expired_leases(db, clock()) == 0
    assert lease(client, worker, 1) == []
    clock.advance(minutes=2)
    # expired but not yet reaped: still held
    assert lease(client, worker, 1) == []
    assert reap_expired_leases(db, clock()) == 1
    assert ids_of(lease(client, worker, 1)) == [album]
    assert get_album(db, album)["leases"] == 2


def test_lease_records_its_holder(client, db, worker, clock):
    [album] = make_albums(db, 1, now=clock())
    lease(client, worker, 1)
    stored = get_album(db, album)
    assert stored["state"] == "leased"
    assert stored["lease"]["holder"] == "worker-1"


def test_late_submission_is_counted_after_the_lease_moved_on(client, db, worker, clock):
    """Invariant 3: a submission after expiry and re-lease is never lost."""
    late = token_header(issue_token(db, "worker-2", "worker", actor="test", now=clock()))
    [album] = make_albums(db, 1, now=clock())
    lease(client, worker, 1)
    clock.advance(minutes=61)
    assert reap_expired_leases(db, clock()) == 1
    assert ids_of(lease(client, late, 1)) == [album]
    assert get_album(db, album)["lease"]["holder"] == "worker-2"
    # the first worker's result arrives after its lease went to worker-2
    response = submit(client, worker, {str(album): [{"site": PTH, "torrentId": 7}]})
    assert response.status_code == 200
    assert get_album(db, album)["state"] == "found"
    assert db.get(task_doc_id(PTH, 7))["albums"] == [album]
    # worker-2's "not found" afterwards does not undo the finding
    assert submit(client, late, {str(album): []}).status_code == 200
    stored = get_album(db, album)
    assert (stored["state"], stored["not_found"]) == ("found", 1)
    assert lease(client, worker, 1) == []


def test_not_found_from_a_stale_holder_leaves_the_current_lease(client, db, worker, clock):
    late = token_header(issue_token(db, "worker-2", "worker", actor="test", now=clock()))
    [album] = make_albums(db, 1, now=clock())
    lease(client, worker, 1)
    clock.advance(minutes=61)
    reap_expired_leases(db, clock())
    lease(client, late, 1)
    assert submit(client, worker, {str(album): []}).status_code == 200
    stored = get_album(db, album)
    assert (stored["state"], stored["lease"]["holder"], stored["not_found"]) == (
        "leased",
        "worker-2",
        1,
    )


# ---------------------------------------------------------------- bad input changes nothing


@pytest.fixture
def unchanged(db, clock, worker):
    """Albums in place; yields a check that nothing was written since."""
    ids = make_albums(db, 2, now=clock())
    before, events = db_snapshot(db), event_ids(db)

    def check():
        assert event_ids(db) == events
        assert db_snapshot(db) == before

    check.ids = ids
    return check


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "invalid_json"),
        ("", "application/json", 400, "invalid_json"),
        ("\xff\xfe", "application/json", 400, "invalid_json"),
        ("[]", "application/json", 400, "validation_failed"),
        ('[{"1": []}]', "application/json", 400, "validation_failed"),
        ("{}", "application/json", 400, "validation_failed"),
        ('"text"', "application/json", 400, "validation_failed"),
        ("null", "application/json", 400, "validation_failed"),
        ('{"1": []}', "application/xml", 415, "unsupported_media_type"),
    ],
)
def test_submit_refuses_bad_bodies(client, worker, unchanged, body, content_type, status, code):
    response = client.post("/metadata/submit", data=body, content_type=content_type, headers=worker)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    unchanged()


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("abc", [], "invalid_album_id"),
        ("-1", [], "invalid_album_id"),
        ("1.5", [], "invalid_album_id"),
        ("²", [], "invalid_album_id"),
        ("", [], "invalid_album_id"),
        ("1" * 5000, [], "invalid_album_id"),
        (str(2**53), [], "invalid_album_id"),
        ("{id}", None, "invalid_entry"),
        ("{id}", {"site": PTH, "torrentId": 1}, "invalid_entry"),
        ("{id}", "not found", "invalid_entry"),
        ("{id}", [37], "invalid_entry"),
        ("{id}", [{"site": PTH}], "invalid_entry"),
        ("{id}", [{"torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": 5, "torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": "", "torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": "not a site", "torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": "https://", "torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": "%%%", "torrentId": 37}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": 0}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": -3}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": 1.5}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": True}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": "3x"}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": "²"}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": None}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": "1" * 5000}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": 2**53}], "invalid_entry"),
        ("{id}", [{"site": PTH, "torrentId": 1}, "x"], "invalid_entry"),
        ("111", [], "unknown_album"),
    ],
)
def test_submit_reports_bad_entries_and_applies_nothing(
    client, worker, unchanged, key, value, code
):
    key = key.format(id=unchanged.ids[0])
    response = submit(client, worker, {key: value})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "no_valid_entries"
    assert body["details"]["albums"][key]["error"] == code
    unchanged()


def test_results_are_reported_under_the_key_sent(client, db, worker, clock):
    [album] = make_albums(db, 1, now=clock())
    padded = f"00{album}"
    response = submit(client, worker, {padded: [], f" {album} ": []})
    assert response.status_code == 200
    albums = response.get_json()["albums"]
    assert albums[padded]["status"] == "not_found"
    assert albums[f" {album} "]["error"] == "invalid_entry"  # the same album again
    assert get_album(db, album)["not_found"] == 1


def test_submit_applies_good_entries_beside_bad_ones(client, db, worker, clock):
    good, other = make_albums(db, 2, now=clock())
    response = submit(
        client, worker, {str(good): [], "x": [], str(other): [{"site": PTH, "torrentId": "x"}]}
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert body["albums"]["x"]["error"] == "invalid_album_id"
    assert body["albums"][str(other)]["error"] == "invalid_entry"
    assert get_album(db, good)["not_found"] == 1
    assert get_album(db, other)["not_found"] == 0


@pytest.mark.parametrize("rows", ["0", "-1", "abc", "1.5", "²", "%20", "00", "1" * 5000])
def test_lease_refuses_bad_row_counts(client, worker, unchanged, rows):
    response = client.get(f"/metadata/{rows}", headers=worker)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_rows"
    unchanged()


def test_oversized_body_is_refused(make_app, worker, unchanged):
    client = make_app(server={"max_body_bytes": 1000}).test_client()
    body = {str(unchanged.ids[0]): [{"site": PTH, "torrentId": i} for i in range(1, 200)]}
    response = submit(client, worker, body)
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    unchanged()


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/metadata", 404, "not_found"),
        ("POST", "/metadata/2", 405, "method_not_allowed"),
        ("DELETE", "/metadata/submit", 405, "method_not_allowed"),
        ("GET", "/metadata/submit", 405, "method_not_allowed"),
        ("GET", "/torrents", 405, "method_not_allowed"),
        ("DELETE", "/torrents", 405, "method_not_allowed"),
        ("GET", "/torrents/submit", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_json(
    client, worker, unchanged, method, path, status, code
):
    response = client.open(path, method=method, headers=worker)
    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["error"] == code
    unchanged()


def test_a_page_whose_last_row_was_leased_elsewhere_loses_no_album(db, clock, monkeypatch):
    """The next page starts at the last row read; if that album left the index
    meanwhile, the page must not skip the one after it."""
    monkeypatch.setattr(leasing, "FIRST_PAGE_ROWS", 2)
    monkeypatch.setattr(leasing, "PAGE_ROWS", 2)
    monkeypatch.setattr(QueueLeaser, "_prefetch", lambda *args: None)  # pages in the call
    ids = make_albums(db, 6, now=clock())
    here, there = QueueLeaser(db), QueueLeaser(db)
    [first] = lease_albums(here, "h", 1, clock(), 60)  # reads the first page: 2 rows
    cursor_album = here._queues["metadata"].cursor[-1]
    other = submit_and_take(there, db, cursor_album, clock)
    db.view("queues", "ready", limit=0)  # the index is brought up to date (say, by the reaper)
    rest = ids_of(lease_albums(here, "h", 10, clock(), 60))
    assert sorted([first["id"], other, *rest]) == sorted(ids)


def submit_and_take(leaser, db, doc_id, clock):
    """Lease exactly `doc_id` through another process's leaser; return its album id."""
    leased = []
    while doc_id not in [d["_id"] for d in leased]:
        leased += leaser.lease("metadata", "t", 1, clock(), timedelta(hours=1), "t")
    for doc in leased:
        if doc["_id"] != doc_id:
            submit_metadata(db, {doc["id"]: []}, holder="t", now=clock(), retry_minutes=600)
    return db.get(doc_id)["id"]


def test_candidates_leased_elsewhere_do_not_pile_up_in_memory():
    ready = candidates.ReadyQueue()
    for round_ in range(200):
        for i in range(100):
            doc_id = f"album:{round_}:{i}"
            ready.upsert((0, 0, 1), "2026-01-01", doc_id, None)
            ready.discard(doc_id)  # leased by another process before this one got to it
    assert sum(len(heap) for heap in ready.heaps.values()) <= 1000


def test_taking_from_another_sites_share_looks_past_work_stamped_in_the_future():
    """Another site's share is taken newest first; an item its clock (ahead of ours)
    stamped in the future must not hide the due ones below it."""
    ready = candidates.ReadyQueue()
    steal = (1, 0, 0)  # another site's share, never tried, another process's slot
    ready.upsert(steal, "2026-01-01T12:00:00Z", "album:1", None)
    ready.upsert(steal, "2030-01-01T00:00:00Z", "album:9", None)
    assert ready.take_due(5, "2026-06-01T00:00:00Z") == ["album:1"]
    assert ready.take_due(5, "2031-01-01T00:00:00Z") == ["album:9"]  # still there, once due
