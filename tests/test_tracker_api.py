"""The Mika-style tracker API and the members' .torrent download, against the real bundled
server; swarms are written into the peers database in the tracker's own format."""

from __future__ import annotations

import hashlib
import io

import bencode2
import pytest
import torf
from conftest import basic_auth, token_header
from factories import all_changes, db_snapshot, event_ids
from torrent_factories import gazelle, info_hash_of, make_torrent, upload_file, write_files
from tracker_factories import make_swarm

from app.accounts.auth import add_user
from app.api.tracker import announce_base
from app.config import load_settings
from app.tracker import activity, members
from metainfo.torrent import raw_info_dict

IH1, IH2 = "a" * 40, "b" * 40
PK = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def peers_db(app):
    """The app's peers database (create_app makes it); dropped after the test."""
    database = app.extensions["distleech"].peers_db
    yield database
    if database.server.database_exists(database.name):
        database.server.delete_database(database.name)


@pytest.fixture
def admin(admin_auth, peers_db):
    """Admin headers; the peers database goes away after the test."""
    return admin_auth


def post_torrent(client, admin, info_hash=IH1, torrent_id=1, name="Torrent.Name-GROUP"):
    body = {"info_hash": info_hash, "torrent_id": torrent_id, "name": name}
    return client.post("/api/torrent", json=body, headers=admin)


def post_user(client, admin, user_id=7, **fields):
    body = {"user_id": user_id, "name": "alice", "can_leech": True, **fields}
    return client.post("/api/user", json=body, headers=admin)


def error_of(response):
    return response.status_code, response.get_json()["error"]


# ---------------------------------------------------------------- torrents and counts


def test_a_torrent_is_registered_shown_counted_and_deleted(client, admin, peers_db, clock):
    response = post_torrent(client, admin, info_hash=IH1.upper(), torrent_id=123)
    assert response.status_code == 201
    shown = response.get_json()
    assert (shown["info_hash"], shown["torrent_id"], shown["source"]) == (IH1, 123, "api")
    assert shown["registered_at"] == "2026-01-01T12:00:00.000000Z"
    post_torrent(client, admin, info_hash=IH2, torrent_id=124)
    make_swarm(
        peers_db,
        IH1,
        {"-qB4650-aaaaaaaaaaaa": {"left": 0}, "-TR3000-bbbbbbbbbbbb": {"left": 10}},
        now=clock(),
    )
    got = client.get(f"/api/torrent/{IH1}", headers=admin).get_json()
    assert (got["name"], got["seeders"], got["leechers"], got["snatches"]) == (
        "Torrent.Name-GROUP",
        1,
        1,
        0,
    )
    assert client.get("/api/counts", headers=admin).get_json() == [
        {"info_hash": IH1, "torrent_id": 123, "seeders": 1, "leechers": 1, "snatches": 0},
        {"info_hash": IH2, "torrent_id": 124, "seeders": 0, "leechers": 0, "snatches": 0},
    ]
    response = client.delete(f"/api/torrent/{IH1}", headers=admin)
    assert response.get_json() == {"info_hash": IH1, "registered": False}
    assert error_of(client.get(f"/api/torrent/{IH1}", headers=admin)) == (
        404,
        "torrent_not_tracked",
    )
    assert [row["info_hash"] for row in client.get("/api/counts", headers=admin).get_json()] == [
        IH2
    ]


def test_counts_carry_snatches_recorded_by_the_tracker(client, admin, db, clock):
    post_torrent(client, admin)
    post_user(client, admin, passkey=PK)
    activity.record_activity(db, {7: (10, 20)}, [(IH1, 7)], now=clock())
    [row] = client.get("/api/counts", headers=admin).get_json()
    assert row["snatches"] == 1
    user = client.get("/api/user/7", headers=admin).get_json()
    assert user == {
        "user_id": 7,
        "name": "alice",
        "can_leech": True,
        "uploaded": 10,
        "downloaded": 20,
        "snatches": 1,
    }


def test_the_peers_of_a_swarm(client, admin, peers_db, clock):
    post_torrent(client, admin)
    empty = client.get(f"/api/torrent/{IH1}/peers", headers=admin).get_json()
    assert empty == {"info_hash": IH1, "seeders": 0, "leechers": 0, "peers": []}
    make_swarm(
        peers_db,
        IH1,
        {"-lt2110-cccccccccccc": {"user_id": 7, "left": 5, "uploaded": 3, "port": 7000}},
        now=clock(),
    )
    got = client.get(f"/api/torrent/{IH1}/peers", headers=admin).get_json()
    assert (got["seeders"], got["leechers"]) == (0, 1)
    [peer] = got["peers"]
    assert peer == {
        "peer_id": b"-lt2110-cccccccccccc".hex(),
        "user_id": 7,
        "client": "-lt2110-",
        "ip": "127.0.0.2",
        "port": 7000,
        "seeding": False,
        "left": 5,
        "uploaded": 3,
        "downloaded": 0,
        "last_seen": "2026-01-01T12:00:00.000000Z",
    }
    assert error_of(client.get(f"/api/torrent/{IH2}/peers", headers=admin)) == (
        404,
        "torrent_not_tracked",
    )
    stored = peers_db.get(f"swarm:{IH1}")
    peers_db.delete(stored["_id"], stored["_rev"])
    make_swarm(peers_db, IH1, {"-lt2110-dddddddddddd": {"ip6": "::1", "port6": 7001}}, now=clock())
    [dual] = client.get(f"/api/torrent/{IH1}/peers", headers=admin).get_json()["peers"]
    assert (dual["ip"], dual["ip6"], dual["port6"]) == ("127.0.0.2", "::1", 7001)


# ---------------------------------------------------------------- users


def test_a_user_without_passkey_gets_one_once(client, admin, db):
    response = post_user(client, admin, can_leech=False)
    assert response.status_code == 201
    body = response.get_json()
    passkey = body.pop("passkey")
    assert len(passkey) == 32 and passkey.isalnum()
    assert body == {
        "user_id": 7,
        "name": "alice",
        "can_leech": False,
        "uploaded": 0,
        "downloaded": 0,
        "snatches": 0,
    }
    assert members.find_user_by_passkey(db, passkey)["user_id"] == 7
    shown = client.get("/api/user/7", headers=admin).get_json()
    assert "passkey" not in shown and "passkey_sha256" not in shown
    # a passkey the site chose is not echoed back
    assert "passkey" not in post_user(client, admin, user_id=8, passkey=PK).get_json()


def test_a_user_is_changed_and_deleted(client, admin, db):
    post_user(client, admin, passkey=PK)
    response = client.patch(
        "/api/user/7", json={"can_leech": False, "name": "alice2"}, headers=admin
    )
    assert (response.get_json()["can_leech"], response.get_json()["name"]) == (False, "alice2")
    assert client.delete("/api/user/7", headers=admin).get_json() == {
        "user_id": 7,
        "active": False,
    }
    assert members.find_user_by_passkey(db, PK) is None
    assert error_of(client.get("/api/user/7", headers=admin)) == (404, "tracker_user_not_found")


def test_a_users_torrents_live_and_snatched(client, admin, db, peers_db, clock):
    post_torrent(client, admin, info_hash=IH1, torrent_id=1)
    post_torrent(client, admin, info_hash=IH2, torrent_id=2)
    post_user(client, admin, passkey=PK)
    make_swarm(peers_db, IH1, {"-qB4650-aaaaaaaaaaaa": {"user_id": 7, "left": 0}}, now=clock())
    make_swarm(
        peers_db,
        IH2,
        {"-qB4650-aaaaaaaaaaaa": {"user_id": 7, "left": 9}, "-TR-x": {"user_id": 8}},
        now=clock(),
    )
    activity.record_activity(db, {}, [(IH1, 7)], now=clock())
    got = client.get("/api/user/7/torrents", headers=admin).get_json()
    assert got == {
        "user_id": 7,
        "swarms": [{"info_hash": IH1, "seeding": True}, {"info_hash": IH2, "seeding": False}],
        "snatched": [{"info_hash": IH1, "at": "2026-01-01T12:00:00.000000Z"}],
    }


# ---------------------------------------------------------------- whitelist


def test_the_whitelist(client, admin):
    assert client.get("/api/whitelist", headers=admin).get_json() == []
    response = client.post(
        "/api/whitelist", json={"prefix": "-DE", "client": "Deluge"}, headers=admin
    )
    assert (response.status_code, response.get_json()) == (
        201,
        {"prefix": "-DE", "client": "Deluge"},
    )
    client.post("/api/whitelist", json={"prefix": "-qB", "client": "qBittorrent"}, headers=admin)
    assert [e["prefix"] for e in client.get("/api/whitelist", headers=admin).get_json()] == [
        "-DE",
        "-qB",
    ]
    response = client.delete("/api/whitelist/-DE", headers=admin)
    assert response.get_json() == {"prefix": "-DE", "active": False}
    assert client.get("/api/whitelist", headers=admin).get_json() == [
        {"prefix": "-qB", "client": "qBittorrent"}
    ]


# ---------------------------------------------------------------- refusals


ENDPOINTS = [
    ("post", "/api/torrent"),
    ("get", f"/api/torrent/{IH1}"),
    ("delete", f"/api/torrent/{IH1}"),
    ("get", f"/api/torrent/{IH1}/peers"),
    ("post", "/api/user"),
    ("get", "/api/user/7"),
    ("patch", "/api/user/7"),
    ("delete", "/api/user/7"),
    ("get", "/api/user/7/torrents"),
    ("post", "/api/whitelist"),
    ("delete", "/api/whitelist/-qB"),
    ("get", "/api/whitelist"),
    ("get", "/api/counts"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_management_endpoint_is_for_admins_only(
    client,
    db,
    clock,
    worker,
    peers_db,
    method,
    path,
):
    add_user(db, "member", "correct horse battery", admin=False, actor="test", now=clock())
    before, events = db_snapshot(db), event_ids(db)
    call = getattr(client, method)
    assert error_of(call(path, json={})) == (401, "authentication_required")
    assert error_of(call(path, json={}, headers=worker)) == (403, "forbidden")
    member = basic_auth("member", "correct horse battery")
    assert error_of(call(path, json={}, headers=member)) == (403, "forbidden")
    bad = basic_auth("member", "wrong password!")
    assert error_of(call(path, json={}, headers=bad)) == (401, "invalid_credentials")
    assert (db_snapshot(db), event_ids(db)) == (before, events)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"info_hash": IH2, "torrent_id": 2}, "validation_failed"),  # no name
        ({"info_hash": IH2, "torrent_id": "2", "name": "x"}, "validation_failed"),
        ({"info_hash": IH2, "torrent_id": -1, "name": "x"}, "validation_failed"),
        ({"info_hash": IH2, "torrent_id": 2, "name": "x", "extra": 1}, "validation_failed"),
        ({"info_hash": "zz", "torrent_id": 2, "name": "x"}, "invalid_info_hash"),
        ({"info_hash": IH2, "torrent_id": 1, "name": "x"}, "torrent_id_taken"),
        ({"info_hash": IH1, "torrent_id": 9, "name": "x"}, "torrent_already_tracked"),
        ([], "validation_failed"),
    ],
)
def test_bad_torrent_registrations(client, admin, db, body, code):
    post_torrent(client, admin, info_hash=IH1, torrent_id=1)
    before = db_snapshot(db)
    response = client.post("/api/torrent", json=body, headers=admin)
    assert response.get_json()["error"] == code
    assert response.status_code == {"torrent_id_taken": 409, "torrent_already_tracked": 409}.get(
        code, 400
    )
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user_id": 8}, 400, "validation_failed"),
        ({"user_id": "8", "name": "x"}, 400, "validation_failed"),
        ({"user_id": 8, "name": "x", "can_leech": "yes"}, 400, "validation_failed"),
        ({"user_id": 8, "name": "x", "passkey": "short"}, 400, "invalid_passkey"),
        ({"user_id": 8, "name": "x", "passkey": "has-a-dash-0123456"}, 400, "invalid_passkey"),
        ({"user_id": 8, "name": "x", "passkey": PK}, 409, "passkey_taken"),
        ({"user_id": 7, "name": "x"}, 409, "tracker_user_exists"),
    ],
)
def test_bad_user_registrations(client, admin, db, body, status, code):
    post_user(client, admin, passkey=PK)
    before = db_snapshot(db)
    assert error_of(client.post("/api/user", json=body, headers=admin)) == (status, code)
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("get", "/api/torrent/xyz", None, 400, "invalid_info_hash"),
        ("delete", f"/api/torrent/{IH2}", None, 404, "torrent_not_tracked"),
        ("get", "/api/user/abc", None, 400, "invalid_user_id"),
        ("get", "/api/user/-1", None, 400, "invalid_user_id"),
        ("delete", "/api/user/99", None, 404, "tracker_user_not_found"),
        ("get", "/api/user/99/torrents", None, 404, "tracker_user_not_found"),
        ("patch", "/api/user/99", {"name": "x"}, 404, "tracker_user_not_found"),
        ("patch", "/api/user/7", {}, 400, "validation_failed"),
        ("patch", "/api/user/7", {"user_id": 8}, 400, "validation_failed"),
        ("patch", "/api/user/7", {"passkey": "bad"}, 400, "invalid_passkey"),
        ("post", "/api/whitelist", {"prefix": "-qB"}, 400, "validation_failed"),
        ("post", "/api/whitelist", {"prefix": "a b", "client": "x"}, 400, "invalid_prefix"),
        ("post", "/api/whitelist", {"prefix": "-qB", "client": "x"}, 409, "whitelist_entry_exists"),
        ("delete", "/api/whitelist/-DE", None, 404, "whitelist_entry_not_found"),
    ],
)
def test_bad_requests_change_nothing(client, admin, db, method, path, body, status, code):
    post_torrent(client, admin)
    post_user(client, admin, passkey=PK)
    client.post("/api/whitelist", json={"prefix": "-qB", "client": "qBittorrent"}, headers=admin)
    before, events = db_snapshot(db), event_ids(db)
    response = getattr(client, method)(path, json=body, headers=admin)
    assert error_of(response) == (status, code)
    assert (db_snapshot(db), event_ids(db)) == (before, events)


def test_a_body_that_is_not_json(client, admin, db):
    response = client.post(
        "/api/torrent", data="{nope", headers=admin, content_type="application/json"
    )
    assert error_of(response) == (400, "invalid_json")


# ---------------------------------------------------------------- registry and download


@pytest.fixture
def uploaded(client, worker, tmp_path):
    """A private torrent uploaded to the registry by a worker, as the fetcher does."""
    root = write_files(tmp_path / "Artist - Album (2001) [FLAC]", {"01.flac": 40_000, "x.log": 900})
    data = make_torrent(root)
    response = upload_file(client, worker, data)
    assert response.status_code == 201, response.get_json()
    return data


def test_registry_torrents_are_tracked_automatically(client, admin, worker, uploaded, db):
    info_hash = info_hash_of(uploaded)
    [row] = client.get("/api/counts", headers=admin).get_json()
    assert row == {
        "info_hash": info_hash,
        "torrent_id": int(info_hash[:13], 16),
        "seeders": 0,
        "leechers": 0,
        "snatches": 0,
    }
    shown = client.get(f"/api/torrent/{info_hash}", headers=admin).get_json()
    assert (shown["name"], shown["source"]) == ("Artist - Album (2001) [FLAC]", "registry")
    # an admin's DELETE sticks: another upload of the same torrent does not bring it back
    client.delete(f"/api/torrent/{info_hash}", headers=admin)
    changes = all_changes(db)
    upload_file(client, worker, uploaded, site="https://passtheheadphones.me/", torrent_id=5)
    assert client.get("/api/counts", headers=admin).get_json() == []
    new = [c for c in all_changes(db) if c not in changes]
    assert new and [c for c in new if c[0].startswith("tracked:")] == []


def test_a_member_downloads_a_torrent_with_the_passkey_in_its_announce(client, admin, uploaded):
    info_hash = info_hash_of(uploaded)
    passkey = post_user(client, admin).get_json()["passkey"]
    response = client.get(f"/api/torrents/{info_hash}/download?passkey={passkey}")
    assert response.status_code == 200
    assert response.mimetype == "application/x-bittorrent"
    metainfo = bencode2.bdecode(response.data)
    assert metainfo[b"announce"] == f"http://127.0.0.1:6969/announce?passkey={passkey}".encode()
    torrent = torf.Torrent.read_stream(io.BytesIO(response.data))
    assert torrent.infohash == info_hash  # the info dictionary is untouched
    assert torrent.private is True
    assert hashlib.sha1(raw_info_dict(response.data)).hexdigest() == info_hash


def test_the_announce_url_uses_the_public_url(make_app, worker, tmp_path, admin_auth):
    app = make_app(tracker={"public_url": "https://tracker.example.org/t/"})
    client = app.test_client()
    try:
        files = write_files(tmp_path / "album", {"a.flac": 20_000})
        data = make_torrent(files)
        assert upload_file(client, worker, data).status_code == 201
        response = post_user(client, admin_auth, passkey=PK)
        assert response.status_code == 201
        response = client.get(f"/api/torrents/{info_hash_of(data)}/download?passkey={PK}")
        announce = bencode2.bdecode(response.data)[b"announce"]
        assert announce == f"https://tracker.example.org/t/announce?passkey={PK}".encode()
    finally:
        peers = app.extensions["distleech"].peers_db
        peers.server.delete_database(peers.name)


def test_the_announce_url_without_a_public_url_names_the_first_tracker_address():
    settings = load_settings({"tracker": {"host": "::1,127.0.0.1", "port": 7000}})
    assert announce_base(settings) == "http://[::1]:7000"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "missing_field"),
        ("?passkey=", 400, "missing_field"),
        ("?passkey=ffffffffffffffffffffffffffffffff", 403, "unknown_passkey"),
        ("?passkey=not-a-passkey", 403, "unknown_passkey"),
    ],
)
def test_a_download_needs_a_known_passkey(client, admin, uploaded, query, status, code):
    path = f"/api/torrents/{info_hash_of(uploaded)}/download{query}"
    assert error_of(client.get(path)) == (status, code)


def test_a_deleted_users_passkey_downloads_nothing(client, admin, uploaded):
    post_user(client, admin, passkey=PK)
    path = f"/api/torrents/{info_hash_of(uploaded)}/download?passkey={PK}"
    assert client.get(path).status_code == 200
    client.delete("/api/user/7", headers=admin)
    assert error_of(client.get(path)) == (403, "unknown_passkey")


def test_downloads_of_torrents_not_tracked_or_without_a_file(client, admin, worker, uploaded):
    post_user(client, admin, passkey=PK)
    # tracked by the API, but no .torrent is stored for it
    post_torrent(client, admin, info_hash=IH2, torrent_id=2)
    path = f"/api/torrents/{IH2}/download?passkey={PK}"
    assert error_of(client.get(path)) == (404, "torrent_file_not_found")
    # a Gazelle-only upload is tracked automatically, but has no .torrent either
    ih3 = "c" * 40
    response = client.post(
        "/api/torrents",
        json={
            "site": "passtheheadphones.me",
            "gazelle": gazelle(9, [("a.flac", 5)], info_hash=ih3),
        },
        headers=worker,
    )
    assert response.status_code == 201
    assert error_of(client.get(f"/api/torrents/{ih3}/download?passkey={PK}")) == (
        404,
        "torrent_file_not_found",
    )
    # the registry's torrent, once unregistered, is not served
    info_hash = info_hash_of(uploaded)
    client.delete(f"/api/torrent/{info_hash}", headers=admin)
    path = f"/api/torrents/{info_hash}/download?passkey={PK}"
    assert error_of(client.get(path)) == (404, "torrent_not_tracked")
    assert error_of(client.get(f"/api/torrents/nothex/download?passkey={PK}")) == (
        400,
        "invalid_info_hash",
    )


def test_tokens_do_not_replace_the_passkey(client, admin, uploaded, worker_token):
    path = f"/api/torrents/{info_hash_of(uploaded)}/download"
    assert error_of(client.get(path, headers=token_header(worker_token))) == (
        400,
        "missing_field",
    )
