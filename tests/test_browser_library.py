"""The torrents pages in chromium: an uploader uploads a real .torrent through the form,
finds it by title, opens its page and downloads it with their own passkey inside."""

from __future__ import annotations

import json
import re
from pathlib import Path

import bencode2
import pytest
from browser import fits_the_width, log_in, screenshot
from playwright.sync_api import expect
from torrent_factories import (
    gazelle,
    info_hash_of,
    listing_of,
    make_torrent,
    sizes_of,
    write_files,
)
from tracker_factories import make_swarm

from app.accounts import invites, people
from app.ingest.parse import parse_listing
from app.ingest.record import ingest_listing
from app.registry.aggregate import make_upload
from app.registry.parse import parse_torrent_file
from app.registry.register import register_upload

PASSWORD = "correct horse battery"
SITE = "https://site.example/"
TOP = "Bruce Cockburn - Life Short Call Now (2006) [FLAC]"


@pytest.fixture
def make_person(db, clock, admin_auth):
    """People invited by root with a role (registering issues their passkey)."""

    def factory(name: str, role: str) -> str:
        secret, _ = invites.create_invite(db, inviter="root", role=role, days=7, now=clock())
        invites.register(db, secret, name, PASSWORD, now=clock())
        return name

    return factory


def album(tmp_path: Path) -> tuple[Path, bytes]:
    root = write_files(tmp_path, {f"{TOP}/01 Mango.flac": 60_000, f"{TOP}/cover.jpg": 900})
    return root / TOP, make_torrent(root / TOP)


def test_an_uploader_uploads_finds_opens_and_downloads_a_torrent(
    page, live_server, make_person, db, clock, tmp_path
):
    base = live_server.url
    make_person("ulla", "uploader")
    directory, data = album(tmp_path)
    torrent_file = tmp_path / "album.torrent"
    torrent_file.write_bytes(data)
    info_hash = info_hash_of(data)
    found = gazelle(
        37,
        sizes_of(directory),
        top=TOP,
        info_hash=info_hash,
        name="Life Short Call Now",
        artists=("Bruce Cockburn",),
        year=2006,
    )

    # log in through the form, then upload the .torrent and its Gazelle JSON
    log_in(page, base, "ulla", PASSWORD, "/library/upload")
    expect(page).to_have_title("Upload a torrent · distleech")
    page.get_by_label(".torrent file").set_input_files(str(torrent_file))
    page.get_by_label("Gazelle JSON").fill(json.dumps(found))
    page.get_by_label("Site URL").fill(SITE)
    page.get_by_label("Site torrent id").fill("37")
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(rf"/library/{info_hash}\?uploaded=registered$"))
    expect(page.get_by_role("status")).to_have_text("Uploaded: the torrent is registered.")

    # the ingest scanner finds and verifies the files; someone seeds it
    verified = {info_hash: {"status": "verified"}}
    listing = listing_of(directory, path=f"/ingest/{TOP}", verified=verified)
    ingest_listing(db, parse_listing(listing), actor="scanner", now=clock())
    peers_db = live_server.app.extensions["distleech"].peers_db
    make_swarm(peers_db, info_hash, {"-qB4650-seeder": {"left": 0}}, now=clock())

    # find it by title search
    page.get_by_role("link", name="All torrents").click()
    page.get_by_label("Search titles").fill("cockburn 2006")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_title("Torrents matching “cockburn 2006” · distleech")
    link = page.get_by_role("link", name="Bruce Cockburn - Life Short Call Now (2006)")
    expect(link).to_be_visible()
    row = page.get_by_role("row").filter(has=link)
    expect(row.get_by_role("cell")).to_have_text(
        ["Bruce Cockburn - Life Short Call Now (2006)", "59.5 KiB", "2", "1", "0", "0", "Verified"]
    )
    screenshot(page, "library")

    # its page: files, where they live, tracker numbers, the download
    link.click()
    expect(page).to_have_url(f"{base}/library/{info_hash}")
    expect(page.get_by_role("cell", name="01 Mango.flac", exact=True)).to_be_visible()
    expect(page.get_by_text("site.example torrent 37")).to_be_visible()
    expect(page.get_by_role("cell", name=f"/ingest/{TOP}/01 Mango.flac")).to_be_visible()
    screenshot(page, "torrent")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download .torrent").click()
    download = download_info.value
    assert download.suggested_filename == f"{info_hash}.torrent"
    downloaded = bencode2.bdecode(Path(download.path()).read_bytes())

    # the announce URL carries ulla's own passkey; the info dictionary is unchanged
    passkey = people.get_passkey(db, "ulla")
    assert downloaded[b"announce"].decode().endswith(f"/announce?passkey={passkey}")
    assert info_hash_of(Path(download.path()).read_bytes()) == info_hash


def test_the_torrents_pages_fit_a_phone_screen(page, live_server, make_person, db, tmp_path):
    base = live_server.url
    make_person("ulla", "uploader")
    _, data = album(tmp_path)
    page.set_viewport_size({"width": 375, "height": 667})
    log_in(page, base, "ulla", PASSWORD, "/library/upload")
    torrent_file = tmp_path / "album.torrent"
    torrent_file.write_bytes(data)
    page.get_by_label(".torrent file").set_input_files(str(torrent_file))
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"\?uploaded=registered$"))
    for path in ("/library", f"/library/{info_hash_of(data)}", "/library/upload"):
        page.goto(f"{base}{path}")
        assert fits_the_width(page), path


def test_a_member_gets_a_403_page_for_upload(page, live_server, make_person):
    make_person("mia", "member")
    log_in(page, live_server.url, "mia", PASSWORD, "/library")
    response = page.goto(f"{live_server.url}/library/upload")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_have_text("This page is for: uploader.")


def test_a_bad_upload_shows_the_error_in_words_and_registers_nothing(
    page, live_server, make_person, db, tmp_path
):
    make_person("ulla", "uploader")
    log_in(page, live_server.url, "ulla", PASSWORD, "/library/upload")
    not_a_torrent = tmp_path / "notes.torrent"
    not_a_torrent.write_text("these are notes, not a torrent")
    page.get_by_label(".torrent file").set_input_files(str(not_a_torrent))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("The .torrent file cannot be read")

    # bad Gazelle JSON: the error in words, and what was typed is still there
    page.get_by_label("Gazelle JSON").fill('{"group": ')
    page.get_by_label("Site URL").fill(SITE)
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("The gazelle field")
    expect(page.get_by_label("Gazelle JSON")).to_have_value('{"group": ')
    expect(page.get_by_label("Site URL")).to_have_value(SITE)
    assert list(db.iter_prefix("torrent:")) == []


def test_the_tracker_numbers_refresh_while_the_page_is_open(
    page, live_server, make_person, db, clock, tmp_path
):
    make_person("mia", "member")
    _, data = album(tmp_path)
    upload = make_upload(None, None, parse_torrent_file(data), None)
    info_hash = register_upload(db, upload, actor="test", now=clock())["info_hash"]
    log_in(page, live_server.url, "mia", PASSWORD, f"/library/{info_hash}")
    seeders = page.locator(f"#seeders-{info_hash}")
    expect(seeders).to_have_text("0")
    # two seeders arrive: htmx brings the new number within about 10 s, no reload
    peers_db = live_server.app.extensions["distleech"].peers_db
    make_swarm(peers_db, info_hash, {"-qB-a": {"left": 0}, "-TR-b": {"left": 0}}, now=clock())
    expect(seeders).to_have_text("2", timeout=15_000)
