"""The torrent registry (POST /api/torrents, lookups, search, unavailable), on the real server."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torf
from conftest import token_header
from factories import PTH, db_snapshot, event_ids, make_download_task
from torrent_factories import (
    app,  # noqa: F401  (the app with the torrents blueprint)
    gazelle,
    info_hash_of,
    make_torrent,
    sizes_of,
    upload_file,
    upload_gazelle,
    write_files,
)

from app.accounts.auth import issue_token
from app.queues.downloads import task_doc_id
from app.queues.leasing import reap_expired_leases
from app.registry.keys import torrent_doc_id, torrent_file_doc_id
from app.store.events import read_events
from app.store.projections import rebuild_projections
from metainfo.torrent import raw_info_dict

OPS = "orpheus.network"
ALBUM_FILES = {
    "01 - Björk & Sigur Rós.flac": 40_000,
    "02 - Don't Stop.flac": 33_333,
    "CD2/03 - Ωmega.flac": 20_001,
    "cover.jpg": 5_000,
}


@pytest.fixture
def album(tmp_path):
    """A multi-file torrent over real files: Unicode and HTML-escapable names, an empty file."""
    root = write_files(tmp_path / "Artist - Album (1999) [FLAC]", ALBUM_FILES)
    (root / "empty.txt").write_bytes(b"")
    data = make_torrent(root, empty_files=("empty.txt",))
    return root, data, info_hash_of(data)


def album_gazelle(root, info_hash=None, torrent_id=37, **kwargs):
    return gazelle(torrent_id, sizes_of(root), top=root.name, info_hash=info_hash, **kwargs)


def lease(client, headers, site=PTH):
    response = client.post("/torrents", data={"site": site, "rows": "100"}, headers=headers)
    assert response.status_code == 200
    return [t["siteTorrentId"] for t in response.get_json()["torrents"]]


# ---------------------------------------------------------------- the two upload forms


def test_a_torrent_file_registers_its_layout_and_links_the_task(client, db, worker, clock, album):
    root, data, info_hash = album
    make_download_task(db, 37, now=clock())
    response = upload_file(client, worker, data, site=f"https://{PTH}/", torrent_id=37)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "registered"
    assert body["torrent_file"] == "stored"
    assert body["tasks"] == [{"site": PTH, "torrentId": 37, "status": "linked"}]
    doc = db.get(torrent_doc_id(info_hash))
    assert doc["info_hash"] == info_hash == info_hash.lower()
    assert (doc["name"], doc["single_file"], doc["private"]) == (root.name, False, True)
    assert sorted((f["path"], f["size"]) for f in doc["files"]) == sizes_of(root)
    assert ("empty.txt", 0) in [(f["path"], f["size"]) for f in doc["files"]]
    assert doc["piece_length"] == 16384 and doc["piece_count"] == -(-doc["size"] // 16384)
    assert "pieces" not in doc  # piece hashes stay in the torrentfile document
    assert doc["sites"] == [{"site": PTH, "torrentId": 37}]
    task = db.get(task_doc_id(PTH, 37))
    assert task["info_hash"] == info_hash and task["state"] == "ready"
    assert [e["name"] for e in read_events(db, task_doc_id(PTH, 37))][1] == "torrent_linked"


def test_the_stored_torrent_keeps_the_info_dict_and_drops_announce_urls(client, db, worker, album):
    root, _, _ = album
    torrent = torf.Torrent(path=root, private=True, piece_size=16384)
    torrent.trackers = ["https://tracker.example/SECRETPASSKEY/announce"]
    torrent.generate()
    data = bytes(torrent.dump())
    info_hash = info_hash_of(data)
    assert upload_file(client, worker, data, site=PTH, torrent_id=5).status_code == 201
    stored = base64.b64decode(db.get(torrent_file_doc_id(info_hash))["data"])
    assert b"SECRETPASSKEY" not in stored
    assert raw_info_dict(stored) == raw_info_dict(data)
    served = client.get(f"/api/torrents/{info_hash.upper()}/file", headers=worker)
    assert served.status_code == 200
    assert served.mimetype == "application/x-bittorrent"
    assert info_hash_of(served.data) == info_hash


def test_a_single_file_torrent(client, db, worker, tmp_path):
    path = write_files(tmp_path, {"Lonely Song.flac": 50_000}) / "Lonely Song.flac"
    data = make_torrent(path)
    response = upload_file(client, worker, data, site=PTH, torrent_id=8)
    assert response.status_code == 201
    doc = db.get(torrent_doc_id(info_hash_of(data)))
    assert doc["single_file"] is True
    assert doc["files"] == [{"path": "Lonely Song.flac", "size": 50_000, "key": "lonely song.flac"}]
    assert doc["match_dir"] == "lonely song.flac"


def test_gazelle_json_is_unescaped(client, db, worker, album):
    root, _, info_hash = album
    response_object = album_gazelle(
        root, info_hash, name="Songs & Things", artists=("Simon & Garfunkel", "Björk")
    )
    assert "&amp;" in response_object["torrent"]["fileList"]
    assert "&#x27;" in response_object["torrent"]["fileList"]  # html.escape's apostrophe
    response_object["torrent"]["fileList"] = response_object["torrent"]["fileList"].replace(
        "&#x27;", "&#39;"
    )  # Gazelle writes the decimal form
    response = upload_gazelle(client, worker, PTH, response_object)
    assert response.status_code == 201, response.get_json()
    doc = db.get(torrent_doc_id(info_hash))
    assert sorted((f["path"], f["size"]) for f in doc["files"]) == sizes_of(root)
    assert doc["files_from"] == "gazelle"
    assert doc["has_torrent_file"] is False
    assert doc["title"] == "Simon & Garfunkel & Björk - Songs & Things (1999)"
    [site] = doc["sites"]
    assert site["group"]["name"] == "Songs & Things"
    assert site["release"]["format"] == "FLAC"
    assert "seeders" not in site["release"]  # volatile counts would make every upload news


def test_the_gazelle_envelope_is_accepted(client, db, worker, album):
    root, _, info_hash = album
    envelope = {"status": "success", "response": album_gazelle(root, info_hash)}
    assert upload_gazelle(client, worker, PTH, envelope).status_code == 201


def test_both_forms_merge_into_one_document(client, db, worker, clock, album):
    root, data, info_hash = album
    make_download_task(db, 37, now=clock())
    first = upload_gazelle(client, worker, PTH, album_gazelle(root, info_hash))
    assert first.status_code == 201
    second = upload_file(client, worker, data, site=PTH, torrent_id=37)
    assert second.status_code == 200
    assert second.get_json()["status"] == "updated"
    assert second.get_json()["tasks"] == [{"site": PTH, "torrentId": 37, "status": "linked"}]
    doc = db.get(torrent_doc_id(info_hash))
    assert doc["files_from"] == "torrent" and doc["has_torrent_file"]
    assert doc["sites"][0]["group"]["name"] == "Album"  # the Gazelle metadata stays
    rows = db.server.get_json(f"{db.path}/_all_docs", startkey="torrent:", endkey="torrent:\ufff0")
    assert [row["id"] for row in rows["rows"]] == [torrent_doc_id(info_hash)]
    # uploading either form again changes nothing
    before = db_snapshot(db)
    again = upload_file(client, worker, data, site=PTH, torrent_id=37).get_json()
    assert again["status"] == "unchanged" and again["torrent_file"] == "already_stored"
    assert upload_gazelle(client, worker, PTH, album_gazelle(root, info_hash)).status_code == 200
    assert db_snapshot(db) == before


def test_a_gazelle_upload_without_info_hash_joins_by_its_torrent_file(client, db, worker, album):
    root, data, info_hash = album
    form_gazelle = album_gazelle(root)  # no infoHash: identified by the .torrent
    response = upload_file(
        client, worker, data, site=PTH, torrent_id=37, gazelle_json=json.dumps(form_gazelle)
    )
    assert response.status_code == 201, response.get_json()
    doc = db.get(torrent_doc_id(info_hash))
    assert doc["files_from"] == "torrent" and doc["sites"][0]["group"]["name"] == "Album"


def test_the_same_torrent_on_two_sites(client, db, worker, album):
    root, data, info_hash = album
    assert upload_file(client, worker, data, site=PTH, torrent_id=37).status_code == 201
    assert upload_file(client, worker, data, site=OPS, torrent_id=9).status_code == 200
    sites = [(s["site"], s["torrentId"]) for s in db.get(torrent_doc_id(info_hash))["sites"]]
    assert sites == [(PTH, 37), (OPS, 9)]


# ---------------------------------------------------------------- refusals


@pytest.fixture
def unchanged(db, clock, worker, album):
    """Registers the album (so conflicts can happen); then nothing may change."""
    make_download_task(db, 37, now=clock())
    state = {}

    def remember():
        state["docs"], state["events"] = db_snapshot(db), event_ids(db)

    def check():
        assert event_ids(db) == state["events"]
        assert db_snapshot(db) == state["docs"]

    remember()
    return check, remember


def test_gazelle_without_info_hash_and_no_torrent_file(client, worker, album, unchanged):
    check, _ = unchanged
    root, _, _ = album
    response = upload_gazelle(client, worker, PTH, album_gazelle(root))
    assert response.status_code == 400
    assert response.get_json()["error"] == "info_hash_unknown"
    check()


def test_info_hashes_that_disagree(client, worker, album, unchanged):
    check, _ = unchanged
    root, data, _ = album
    other = json.dumps(album_gazelle(root, "ab" * 20))
    response = upload_file(client, worker, data, site=PTH, torrent_id=37, gazelle_json=other)
    assert response.get_json()["error"] == "info_hash_mismatch"
    mismatch = json.dumps(album_gazelle(root, torrent_id=38))
    response = upload_file(client, worker, data, site=PTH, torrent_id=37, gazelle_json=mismatch)
    assert response.get_json()["error"] == "torrent_id_mismatch"
    check()


def test_a_site_torrent_id_taken_by_another_info_hash(client, worker, album, unchanged, tmp_path):
    check, remember = unchanged
    root, data, _ = album
    assert upload_file(client, worker, data, site=PTH, torrent_id=37).status_code == 201
    remember()
    other = make_torrent(write_files(tmp_path / "Other", {"x.flac": 30_000}))
    response = upload_file(client, worker, other, site=PTH, torrent_id=37)
    assert response.status_code == 409
    assert response.get_json()["error"] == "site_torrent_conflict"
    response = upload_gazelle(
        client, worker, PTH, gazelle(37, [("x.flac", 3)], info_hash="cd" * 20)
    )
    assert response.get_json()["error"] == "site_torrent_conflict"
    check()


BAD_GAZELLE = {"group": {}, "torrent": {"id": 5, "infoHash": "AB" * 20, "filePath": "D"}}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("nope", "invalid_json"),
        ("[]", "validation_failed"),
        ({"site": PTH}, "missing_field"),
        ({"gazelle": gazelle(5, [("a", 1)], info_hash="ab" * 20)}, "missing_field"),
        ({"site": "%%%", "gazelle": gazelle(5, [("a", 1)], info_hash="ab" * 20)}, "invalid_site"),
        ({"site": PTH, "gazelle": "x"}, "invalid_gazelle"),
        ({"site": PTH, "gazelle": {"group": {}}}, "invalid_gazelle"),
        ({"site": PTH, "gazelle": BAD_GAZELLE}, "invalid_gazelle"),
        (
            {
                "site": PTH,
                "gazelle": dict(
                    BAD_GAZELLE, torrent={**BAD_GAZELLE["torrent"], "fileList": "a{{{x}}}"}
                ),
            },
            "invalid_gazelle",
        ),
        (
            {"site": PTH, "gazelle": gazelle(5, [("a", 1), ("b", 2)], info_hash="ab" * 20)},
            "invalid_gazelle",
        ),  # no filePath for two files
        (
            {"site": PTH, "gazelle": gazelle(0, [("a", 1)], info_hash="ab" * 20)},
            "invalid_torrent_id",
        ),
        ({"site": PTH, "gazelle": gazelle(5, [("a", 1)], info_hash="xyz")}, "invalid_info_hash"),
    ],
)
def test_bad_json_uploads(client, worker, unchanged, body, code):
    check, _ = unchanged
    if isinstance(body, str):
        response = client.post(
            "/api/torrents", data=body, content_type="application/json", headers=worker
        )
    else:
        response = client.post("/api/torrents", json=body, headers=worker)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == code
    check()


@pytest.mark.parametrize(
    ("data", "fields", "code"),
    [
        (b"", {"site": PTH, "torrentId": "5"}, "invalid_torrent_file"),
        (b"not bencode", {"site": PTH, "torrentId": "5"}, "invalid_torrent_file"),
        (b"d4:infod4:name1:aee", {"site": PTH, "torrentId": "5"}, "invalid_torrent_file"),
        (None, {"site": PTH, "torrentId": "5"}, "missing_field"),
        ("album", {"site": PTH}, "invalid_site"),
        ("album", {"torrentId": "5"}, "invalid_site"),
        ("album", {"site": PTH, "torrentId": "-5"}, "invalid_torrent_id"),
        ("album", {"site": "http://[::1", "torrentId": "5"}, "invalid_site"),
        ("album", {"site": PTH, "torrentId": "5", "gazelle": "{"}, "invalid_gazelle"),
    ],
)
def test_bad_multipart_uploads(client, worker, unchanged, album, data, fields, code):
    check, _ = unchanged
    form = dict(fields)
    if data is not None:
        form["torrent"] = (io.BytesIO(album[1] if data == "album" else data), "x.torrent")
    response = client.post(
        "/api/torrents", data=form, headers=worker, content_type="multipart/form-data"
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == code
    check()


# ---------------------------------------------------------------- lookups and search


def test_reseed_lookup_of_a_torrent_not_yet_found(client, worker, album):
    root, data, info_hash = album
    upload_file(client, worker, data, site=PTH, torrent_id=37)
    body = client.get(f"/api/torrents/{info_hash}", headers=worker).get_json()
    assert body["info_hash"] == info_hash and body["location"] is None
    assert body["state"] == "registered"
    assert all(f["local_path"] is None for f in body["files"])
    by_site = client.get(f"/api/torrents/by-site/{PTH}/37", headers=worker)
    assert by_site.status_code == 200 and by_site.get_json() == body


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/torrents/" + "ab" * 20, 404, "torrent_not_found"),
        ("/api/torrents/nothex", 400, "invalid_info_hash"),
        ("/api/torrents/" + "ab" * 20 + "/file", 404, "torrent_file_not_found"),
        ("/api/torrents/by-site/" + PTH + "/99", 404, "torrent_not_found"),
        ("/api/torrents/by-site/" + PTH + "/x", 400, "invalid_torrent_id"),
        ("/api/torrents/by-site/%25%25/5", 400, "invalid_site"),
        ("/api/torrents", 400, "invalid_query"),
        ("/api/torrents?q=%20", 400, "invalid_query"),
        ("/api/torrents?q=---", 400, "invalid_query"),
        ("/api/torrents?q=album&limit=0", 400, "invalid_query"),
        ("/api/torrents?q=album&limit=101", 400, "invalid_query"),
    ],
)
def test_bad_lookups(client, worker, path, status, code):
    response = client.get(path, headers=worker)
    assert response.status_code == status
    assert response.get_json()["error"] == code


def test_title_search(client, db, worker):
    def register(torrent_id, name, artists, year, top):
        info_hash = f"{torrent_id:040x}"
        files = [("01.flac", 1000 + torrent_id)]
        body = gazelle(
            torrent_id, files, top=top, info_hash=info_hash, name=name, artists=artists, year=year
        )
        assert upload_gazelle(client, worker, PTH, body).status_code == 201
        return info_hash

    bjork = register(1, "Homogenic", ("Björk",), 1997, "Bjork - Homogenic [FLAC]")
    post = register(2, "Post", ("Björk",), 1995, "Björk - Post (1995)")
    waits = register(3, "Rain Dogs", ("Tom Waits",), 1985, "Tom Waits - Rain Dogs")

    def search(q):
        response = client.get("/api/torrents", query_string={"q": q}, headers=worker)
        assert response.status_code == 200, response.get_json()
        return [t["info_hash"] for t in response.get_json()["torrents"]]

    assert search("bjork") == [bjork, post]  # title order
    assert search("BJÖRK 1995") == [post]
    assert search("homogenic") == [bjork]
    assert search("waits rain") == [waits]
    assert search("flac") == [bjork]  # the top directory counts too
    assert search("björk waits") == []
    assert search("nothing") == []


# ---------------------------------------------------------------- unavailable


def test_unavailable_cancels_the_task_for_good(client, db, worker, clock, album):
    _, data, info_hash = album
    make_download_task(db, 37, now=clock())
    make_download_task(db, 38, now=clock())
    upload_file(client, worker, data, site=PTH, torrent_id=37)
    assert sorted(lease(client, worker)) == [37, 38]  # both leased now
    response = client.post(
        f"/api/torrents/{info_hash}/unavailable", json={"reason": "trumped"}, headers=worker
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["recorded"] is True
    assert body["tasks"] == [{"site": PTH, "torrentId": 37, "status": "cancelled"}]
    assert body["torrent"]["state"] == "unavailable"
    assert body["torrent"]["unavailable"]["reason"] == "trumped"
    task = db.get(task_doc_id(PTH, 37))
    assert (task["state"], task["lease"]) == ("cancelled", None)
    # the lease runs out: 38 comes back, 37 never does
    clock.advance(days=15)
    assert reap_expired_leases(db, clock()) == 1
    assert lease(client, worker) == [38]
    assert lease(client, worker) == []
    rows = db.view("queues", "ready", reduce=False)
    assert task_doc_id(PTH, 37) not in [row["id"] for row in rows]
    # again: nothing changes
    before = db_snapshot(db)
    again = client.post(f"/api/torrents/{info_hash}/unavailable", headers=worker).get_json()
    assert again["recorded"] is False
    assert again["tasks"][0]["status"] == "already_cancelled"
    assert db_snapshot(db) == before


def test_a_task_uploaded_after_the_torrent_went_unavailable_is_cancelled(
    client, db, worker, clock, album
):
    _, data, info_hash = album
    upload_file(client, worker, data, site=PTH, torrent_id=37)
    client.post(f"/api/torrents/{info_hash}/unavailable", headers=worker)
    make_download_task(db, 37, now=clock())  # the metadata worker found it again
    body = upload_file(client, worker, data, site=PTH, torrent_id=37).get_json()
    assert body["tasks"] == [{"site": PTH, "torrentId": 37, "status": "cancelled"}]
    assert lease(client, worker) == []


def test_unavailable_by_site_also_without_a_registered_torrent(client, db, worker, clock):
    make_download_task(db, 40, now=clock())
    response = client.post(
        f"/api/torrents/by-site/{PTH}/40/unavailable", data={"reason": "deleted"}, headers=worker
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["info_hash"] is None
    assert body["tasks"] == [{"site": PTH, "torrentId": 40, "status": "cancelled"}]
    assert lease(client, worker) == []
    missing = client.post(f"/api/torrents/by-site/{PTH}/41/unavailable", headers=worker)
    assert missing.status_code == 404 and missing.get_json()["error"] == "torrent_not_found"


def test_a_done_task_stays_done(client, db, worker, clock, album):
    _, data, info_hash = album
    make_download_task(db, 37, now=clock())
    upload_file(client, worker, data, site=PTH, torrent_id=37)
    client.post(
        "/torrents/submit", json={"/ingest/x": [{"site": PTH, "torrentId": 37}]}, headers=worker
    )
    body = client.post(f"/api/torrents/{info_hash}/unavailable", headers=worker).get_json()
    assert body["tasks"] == [{"site": PTH, "torrentId": 37, "status": "done"}]
    assert db.get(task_doc_id(PTH, 37))["state"] == "done"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/torrents/" + "ab" * 20 + "/unavailable", None, 404, "torrent_not_found"),
        ("/api/torrents/zz/unavailable", None, 400, "invalid_info_hash"),
        ("/api/torrents/{ih}/unavailable", {"reason": 5}, 400, "invalid_reason"),
        ("/api/torrents/{ih}/unavailable", {"reason": "x" * 1001}, 400, "invalid_reason"),
        ("/api/torrents/{ih}/unavailable", "[1]", 400, "validation_failed"),
        ("/api/torrents/{ih}/unavailable", "{", 400, "invalid_json"),
        ("/api/torrents/by-site/" + PTH + "/0/unavailable", None, 400, "invalid_torrent_id"),
    ],
)
def test_bad_unavailable_requests(client, worker, album, unchanged, path, body, status, code):
    check, remember = unchanged
    upload_file(client, worker, album[1], site=PTH, torrent_id=37)
    remember()
    url = path.format(ih=album[2])
    if isinstance(body, str):
        response = client.post(url, data=body, content_type="application/json", headers=worker)
    else:
        response = (
            client.post(url, json=body, headers=worker)
            if body
            else client.post(url, headers=worker)
        )
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"] == code
    check()


# ---------------------------------------------------------------- who may call


ENDPOINTS = [
    ("POST", "/api/torrents"),
    ("GET", "/api/torrents?q=album"),
    ("GET", "/api/torrents/" + "ab" * 20),
    ("GET", "/api/torrents/" + "ab" * 20 + "/file"),
    ("GET", f"/api/torrents/by-site/{PTH}/37"),
    ("POST", "/api/torrents/" + "ab" * 20 + "/unavailable"),
    ("POST", f"/api/torrents/by-site/{PTH}/37/unavailable"),
    ("POST", "/api/ingest"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_needs_a_worker_or_an_admin(client, db, clock, admin_auth, method, path):
    queuer = token_header(issue_token(db, "q", "queuer", actor="test", now=clock()))
    before = db_snapshot(db)
    missing = client.open(path, method=method)
    assert (missing.status_code, missing.get_json()["error"]) == (401, "authentication_required")
    bad = client.open(path, method=method, headers=token_header("wrong"))
    assert (bad.status_code, bad.get_json()["error"]) == (401, "invalid_credentials")
    forbidden = client.open(path, method=method, headers=queuer)
    assert (forbidden.status_code, forbidden.get_json()["error"]) == (403, "forbidden")
    assert db_snapshot(db) == before
    # an admin gets through (to an empty search, or a refusal of the empty request)
    assert client.open(path, method=method, headers=admin_auth).status_code in (200, 400, 404)


def test_projections_equal_their_rebuild(client, db, worker, clock, album):
    root, data, info_hash = album
    make_download_task(db, 37, now=clock())
    upload_gazelle(client, worker, PTH, album_gazelle(root, info_hash))
    upload_file(client, worker, data, site=PTH, torrent_id=37)
    upload_file(client, worker, data, site=OPS, torrent_id=9)
    client.post(f"/api/torrents/{info_hash}/unavailable", headers=worker)
    report = rebuild_projections(db, check_only=True)
    assert report.differing == []
