"""The torrents pages (/library): browse, title search, a torrent's page, upload, live counts."""

from __future__ import annotations

import io
import json
import re

import bencode2
import pytest
from markupsafe import escape
from torrent_factories import gazelle, info_hash_of, make_torrent, write_files
from tracker_factories import make_swarm

from app.accounts import invites, people
from app.accounts.sessions import CSRF_FIELD
from app.registry import register
from app.registry.aggregate import make_upload
from app.registry.parse import parse_gazelle, parse_torrent_file
from app.tracker import accounts, activity

PASSWORD = "correct horse battery"
SITE = "https://site.example/"


@pytest.fixture
def peers_db(app):
    """The app's peers database (create_app makes it); dropped after the test."""
    database = app.extensions["distleech"].peers_db
    yield database
    if database.server.database_exists(database.name):
        database.server.delete_database(database.name)


def make_person(db, clock, name, role):
    """A person invited by root with `role` (registering issues their passkey)."""
    secret, _ = invites.create_invite(db, inviter="root", role=role, days=7, now=clock())
    invites.register(db, secret, name, PASSWORD, now=clock())
    return name


def log_in(client, name):
    response = client.post("/login", data={"name": name, "password": PASSWORD})
    assert response.status_code == 303, response.text


@pytest.fixture
def uploader(client, db, clock, admin_auth):
    make_person(db, clock, "ulla", "uploader")
    log_in(client, "ulla")
    return "ulla"


@pytest.fixture
def member(client, db, clock, admin_auth):
    make_person(db, clock, "mia", "member")
    log_in(client, "mia")
    return "mia"


def torrent_bytes(tmp_path, top="Artist - Album (1999)", seed=1):
    root = write_files(tmp_path / f"data{seed}", {f"{top}/01.flac": 40_000, f"{top}/cover.jpg": 9})
    return make_torrent(root / top)


def register_torrent(db, clock, data=None, *, gazelle_data=None, site=None, torrent_id=None):
    parsed = parse_torrent_file(data) if data is not None else None
    found = parse_gazelle(gazelle_data) if gazelle_data is not None else None
    upload = make_upload(site, torrent_id, parsed, found)
    return register.register_upload(db, upload, actor="test", now=clock())["info_hash"]


def csrf_of(client, path="/library/upload"):
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', client.get(path).text)
    assert found, "no CSRF field on the page"
    return found[1]


def post_upload(client, *, data=None, **fields):
    form = {CSRF_FIELD: csrf_of(client), "site": "", "torrentId": "", "gazelle": "", **fields}
    form["torrent"] = (io.BytesIO(data or b""), "x.torrent" if data is not None else "")
    return client.post("/library/upload", data=form, content_type="multipart/form-data")


def actors_of(db, aggregate):
    """Who recorded the aggregate's events (events are batches of changes)."""
    events = db.companion("events").iter_prefix("ev:")
    return {e["actor"] for e in events if any(c["aggregate"] == aggregate for c in e["changes"])}


def torrent_count(db):
    return sum(1 for _ in db.iter_prefix("torrent:"))


# ---------------------------------------------------------------- access


def test_anonymous_browsers_are_sent_to_log_in_first(client):
    for path in ("/library", "/library/upload", "/library/" + "a" * 40):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"].startswith("/login?next=%2Flibrary")


def test_a_member_browses_but_gets_a_403_page_for_upload(client, member, db, clock, tmp_path):
    register_torrent(db, clock, torrent_bytes(tmp_path))
    page = client.get("/library")
    assert page.status_code == 200 and "Artist - Album (1999)" in page.text
    assert "Upload a torrent" not in page.text  # no link to a page they may not use
    refused = client.get("/library/upload")
    assert refused.status_code == 403
    assert "This page is for: uploader." in refused.text and "<html" in refused.text
    assert client.post("/library/upload", data={}).status_code == 403


# ---------------------------------------------------------------- browse and search


def test_browse_lists_torrents_with_tracker_numbers_and_disk_state(
    client, member, db, clock, tmp_path, peers_db
):
    info_hash = register_torrent(db, clock, torrent_bytes(tmp_path))
    make_swarm(peers_db, info_hash, {"-qB-a": {"left": 0}, "-qB-b": {"left": 5}}, now=clock())
    mia = people.tracker_member(db, member)["user_id"]
    activity.record_activity(db, {}, [(info_hash, mia), (info_hash, mia)], now=clock())
    html = client.get("/library").text
    assert "<title>Torrents · distleech</title>" in html
    row = re.search(
        rf"<tr role=\"row\">\s*<td[^>]*><a href=\"/library/{info_hash}\">.*?</tr>", html, re.S
    )
    assert row, "the torrent's row links to its page"
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)
    ]
    assert cells[1:] == ["39.1 KiB", "2", "1", "1", "2", "Not on disk"]
    assert f'hx-get="/library/counts?info_hash={info_hash}"' in html


def test_browse_orders_by_newest_or_name_and_pages(
    client, member, db, clock, tmp_path, monkeypatch
):
    from app.web import library

    monkeypatch.setattr(library, "PAGE_SIZE", 2)
    for seed, name in enumerate(("Bravo", "alpha", "Charlie"), start=1):
        clock.advance(minutes=1)
        register_torrent(db, clock, torrent_bytes(tmp_path, top=name, seed=seed))
    titles = lambda html: re.findall(r'<a href="/library/[0-9a-f]{40}">([^<]+)</a>', html)  # noqa: E731
    newest = client.get("/library").text
    assert titles(newest) == ["Charlie", "alpha"] and 'rel="next"' in newest
    assert titles(client.get("/library?sort=newest&page=2").text) == ["Bravo"]
    assert titles(client.get("/library?sort=name").text) == ["alpha", "Bravo"]
    assert titles(client.get("/library?sort=name&page=2").text) == ["Charlie"]
    assert "There are no torrents on this page." in client.get("/library?page=9").text


def test_title_search_finds_by_words_and_explains_a_useless_query(
    client, member, db, clock, tmp_path
):
    found = gazelle(
        37,
        [("01.flac", 40_000)],
        top="x",
        name="Life Short Call Now",
        artists=("Bruce Cockburn",),
        year=2006,
    )
    info_hash = register_torrent(
        db, clock, torrent_bytes(tmp_path, top="x"), gazelle_data=found, site=SITE
    )
    html = client.get("/library?q=cockburn+2006").text
    assert "Bruce Cockburn - Life Short Call Now (2006)" in html and info_hash in html
    assert "Torrents matching “cockburn 2006”" in html
    missing = client.get("/library?q=nothing+here")
    assert missing.status_code == 200 and "No torrent's title has every word" in missing.text
    useless = client.get("/library?q=%21%21")
    assert useless.status_code == 400
    assert "q must contain at least one letter or digit." in useless.text
    assert 'aria-invalid="true"' in useless.text


def test_counts_fragment_gives_fresh_numbers_for_the_asked_hashes_only(
    client, member, db, clock, tmp_path, peers_db
):
    info_hash = register_torrent(db, clock, torrent_bytes(tmp_path))
    make_swarm(peers_db, info_hash, {"-qB-a": {"left": 0}}, now=clock())
    response = client.get(f"/library/counts?info_hash={info_hash.upper()}&info_hash=bogus")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert f'<span id="seeders-{info_hash}" hx-swap-oob="true">1</span>' in response.text
    assert f'<span id="snatches-{info_hash}" hx-swap-oob="true">0</span>' in response.text
    assert "bogus" not in response.text


# ---------------------------------------------------------------- a torrent's page


def test_torrent_page_shows_files_where_they_live_and_the_download(
    client, member, db, clock, tmp_path, app
):
    data = torrent_bytes(tmp_path)
    info_hash = register_torrent(db, clock, data, site=SITE, torrent_id=37)
    page = client.get(f"/library/{info_hash.upper()}")
    assert page.status_code == 200
    html = page.text
    assert "<title>Artist - Album (1999) · distleech</title>" in html
    assert ">01.flac</td>" in html and "not on disk" in html
    assert "site.example torrent 37" in html
    assert f'href="/api/torrents/{info_hash}/download"' in html
    assert "/announce?passkey=…" in html
    assert people.get_passkey(db, "mia") not in html  # the passkey itself stays off the page
    # the link gives the member's own passkey
    downloaded = client.get(f"/api/torrents/{info_hash}/download")
    announce = bencode2.bdecode(downloaded.data)[b"announce"].decode()
    assert announce.endswith("?passkey=" + people.get_passkey(db, "mia"))


def test_an_untracked_torrent_says_so_instead_of_a_download_link(
    client, member, db, clock, tmp_path
):
    info_hash = register_torrent(db, clock, torrent_bytes(tmp_path))
    accounts.unregister_torrent(db, info_hash, actor="root", now=clock())
    html = client.get(f"/library/{info_hash}").text
    assert "The tracker does not track this torrent" in html
    assert "/download" not in html


def test_unknown_and_malformed_info_hashes_get_error_pages(client, member):
    unknown = client.get("/library/" + "b" * 40)
    assert unknown.status_code == 404 and "No torrent has info hash" in unknown.text
    malformed = client.get("/library/not-a-hash")
    assert malformed.status_code == 400 and "<html" in malformed.text
    assert "Traceback" not in malformed.text


# ---------------------------------------------------------------- upload


def test_an_uploader_uploads_a_torrent_file_and_sees_its_page(client, uploader, db, tmp_path):
    data = torrent_bytes(tmp_path)
    form = client.get("/library/upload").text
    for label in ('for="torrent"', 'for="gazelle"', 'for="site"', 'for="torrentId"'):
        assert label in form
    response = post_upload(client, data=data, site=SITE, torrentId="37")
    info_hash = info_hash_of(data)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/library/{info_hash}?uploaded=registered"
    shown = client.get(response.headers["Location"]).text
    assert "Uploaded: the torrent is registered." in shown
    assert db.get(f"torrent:{info_hash}")["sites"][0]["torrentId"] == 37
    assert db.get(f"tracked:{info_hash}")["registered"] is True
    assert actors_of(db, f"torrent:{info_hash}") == {"ulla"}
    # the same again changes nothing, and says so
    again = post_upload(client, data=data, site=SITE, torrentId="37")
    assert again.headers["Location"].endswith("?uploaded=unchanged")


def test_gazelle_json_alone_registers_a_torrent(client, uploader, db):
    info_hash = "c" * 40
    body = gazelle(41, [("01.flac", 100)], top="Only Gazelle", info_hash=info_hash)
    response = post_upload(client, gazelle=json.dumps(body), site=SITE)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"/library/{info_hash}?")


@pytest.mark.parametrize(
    ("fields", "data", "status", "words"),
    [
        ({}, None, 400, "Choose a .torrent file or paste the Gazelle JSON"),
        ({}, b"this is not a torrent", 400, "The .torrent file cannot be read"),
        ({"gazelle": "{not json", "site": SITE}, None, 400, "The gazelle field"),
        ({"gazelle": '{"group": {}}', "site": SITE}, None, 400, ""),
        ({"site": "", "torrentId": "37"}, "torrent", 400, "site and torrentId come together"),
    ],
)
def test_a_bad_upload_shows_the_error_in_words_keeps_the_fields_and_registers_nothing(
    client, uploader, db, tmp_path, fields, data, status, words
):
    sent = torrent_bytes(tmp_path) if data == "torrent" else data
    response = post_upload(client, data=sent, **fields)
    assert response.status_code == status
    html = response.text
    assert '<div id="form-error" class="error-summary" role="alert"' in html
    assert "<strong>Error:</strong> " + words in html
    assert "Traceback" not in html and "Upload a torrent" in html
    for name in ("gazelle", "site", "torrentId"):
        assert str(escape(fields.get(name, ""))) in html  # what was typed is kept
    assert torrent_count(db) == 0


def test_a_site_torrent_id_known_under_another_hash_is_a_409_in_words(
    client, uploader, db, clock, tmp_path
):
    register_torrent(db, clock, torrent_bytes(tmp_path, seed=1), site=SITE, torrent_id=37)
    other = torrent_bytes(tmp_path, top="Other", seed=2)
    response = post_upload(client, data=other, site=SITE, torrentId="37")
    assert response.status_code == 409
    assert "site.example torrent 37 is registered with another info hash." in response.text
    assert 'value="37"' in response.text
    assert torrent_count(db) == 1


def test_an_upload_without_the_forms_csrf_token_changes_nothing(client, uploader, db, tmp_path):
    form = {"torrent": (io.BytesIO(torrent_bytes(tmp_path)), "x.torrent")}
    response = client.post("/library/upload", data=form, content_type="multipart/form-data")
    assert response.status_code == 403 and "This form is out of date" in response.text
    assert torrent_count(db) == 0


def test_an_upload_over_the_body_limit_is_a_413_form_in_words(make_app, db, clock, admin_auth):
    client = make_app(server={"max_body_bytes": 20_000}).test_client()
    make_person(db, clock, "ulla", "uploader")
    log_in(client, "ulla")
    response = post_upload(client, data=b"d" * 30_000)
    assert response.status_code == 413
    assert "The upload is larger than the 20,000 bytes allowed." in response.text
    assert torrent_count(db) == 0
