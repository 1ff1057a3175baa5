"""A person's whole journey in chromium, with the real tracker and real BitTorrent clients.

invite → register → upload a .torrent → find it by title → download it with the
passkey → a real client (libtorrent) downloads with that passkey and the profile's
totals change → an admin disables the person and the tracker refuses them; and
the CSRF check and the login limit refuse what they must.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from browser import accept_dialogs, log_in
from bt_clients import (
    LEECHER_IP,
    NETNS_REASON,
    SEEDER_IP,
    in_loopback_only_netns,
    running_libtorrent,
    wait_until,
)
from playwright.sync_api import Page, expect
from torrent_factories import info_hash_of, make_torrent, write_files
from tracker_process import TrackerProcess

from app.accounts import people
from app.accounts.auth import add_user
from app.api.tracker import torrent_with_announce

pytestmark = pytest.mark.skipif(not in_loopback_only_netns(), reason=NETNS_REASON)

ADMIN_PASSWORD = "correct horse battery"
PASSWORD = "hounds of love 1985"
TOP = "Kate Bush - Hounds of Love (1985) [FLAC]"


def profile_figure(page: Page, base: str, label: str) -> str:
    page.goto(f"{base}/profile")
    return page.locator("dt", has_text=re.compile(f"^{label}$")).locator("+ dd").inner_text()


@pytest.fixture
def tracker(db, tmp_path):
    process = TrackerProcess(db, tmp_path / "tracker", interval_seconds=5, min_interval_seconds=1)
    yield process
    process.stop(signal.SIGKILL)


def test_invite_register_upload_download_announce_and_be_disabled(
    page, browser, live_server_factory, tracker, db, clock, tmp_path
):
    live = live_server_factory(tracker={"port": tracker.port})
    base = live.url
    add_user(db, "root", ADMIN_PASSWORD, admin=True, actor="test", now=clock())
    root_passkey = people.issue_passkey(db, "root", actor="test", now=clock())

    # 1. the admin invites an uploader from their profile; the link is shown once
    log_in(page, base, "root", ADMIN_PASSWORD)
    page.goto(f"{base}/profile")
    page.get_by_label("Role of the new person").select_option("uploader")
    page.get_by_role("button", name="Create an invite link").click()
    link = page.get_by_label("Registration link").input_value()
    page.get_by_role("button", name=re.compile(r"^Log out")).click()

    # 2. dana registers through the link and is logged in
    page.goto(link)
    page.get_by_label("Name").fill("dana")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(f"{base}/")

    # 3. dana uploads a real .torrent
    content = write_files(
        tmp_path / "seed", {f"{TOP}/01 Aerial.flac": 300_000, f"{TOP}/a.log": 900}
    )
    data = make_torrent(content / TOP)
    info_hash = info_hash_of(data)
    (tmp_path / "upload.torrent").write_bytes(data)
    page.goto(f"{base}/library/upload")
    page.get_by_label(".torrent file").set_input_files(str(tmp_path / "upload.torrent"))
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(rf"/library/{info_hash}\?uploaded=registered$"))

    # 4. finds it by title and downloads it: the announce URL carries her passkey
    page.goto(f"{base}/library")
    page.get_by_label("Search titles").fill("hounds love")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name=re.compile("Hounds of Love")).click()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download .torrent").click()
    downloaded = Path(download_info.value.path()).read_bytes()
    passkey = people.get_passkey(db, "dana")
    assert passkey and f"announce?passkey={passkey}".encode() in downloaded
    assert profile_figure(page, base, "Downloaded") == "0 bytes"

    # 5. root seeds it; dana's client downloads it with her .torrent, then stops
    root_torrent = torrent_with_announce(data, f"{tracker.base}/announce?passkey={root_passkey}")
    with running_libtorrent(SEEDER_IP) as seeder, running_libtorrent(LEECHER_IP) as client:
        seeder.add(root_torrent, content)
        wait_until(lambda: seeder.is_seeding(info_hash), 20, "the seeder")
        client.add(downloaded, tmp_path / "dana")
        wait_until(lambda: client.is_seeding(info_hash), 60, "dana's download to complete")
        assert client.tracker_errors() == []
        assert (tmp_path / "dana" / TOP / "01 Aerial.flac").read_bytes() == (
            content / TOP / "01 Aerial.flac"
        ).read_bytes()
        client.remove(info_hash)  # `stopped`, with what it downloaded

    # 6. her profile shows the download and the snatch
    wait_until(
        lambda: profile_figure(page, base, "Snatches") == "1", 20, "the snatch on the profile"
    )
    assert profile_figure(page, base, "Downloaded") != "0 bytes"

    # 7. a form whose CSRF token was tampered with changes nothing
    page.goto(f"{base}/profile")
    page.locator("form:has(button:has-text('Replace my passkey')) input[name=csrf_token]").evaluate(
        "input => input.value = 'forged'"
    )
    page.get_by_role("button", name="Replace my passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("out of date")
    assert people.get_passkey(db, "dana") == passkey

    # 8. the admin disables dana; her session ends and the tracker refuses her client
    admin = browser.new_context().new_page()
    asked = accept_dialogs(admin)
    try:
        log_in(admin, base, "root", ADMIN_PASSWORD)
        admin.goto(f"{base}/admin/people")
        admin.get_by_role("button", name="Disable dana").click()
        expect(admin.locator("#person-dana")).to_contain_text("disabled")
        assert asked == ["Disable dana? Their sessions end and the tracker refuses their passkey."]
    finally:
        admin.context.close()
    page.goto(f"{base}/profile")
    expect(page).to_have_url(f"{base}/login?next=%2Fprofile")
    with running_libtorrent(LEECHER_IP) as client:
        client.add(downloaded, tmp_path / "dana-again")
        wait_until(client.tracker_errors, 20, "the tracker to refuse dana's passkey")

    # 9. failed logins are limited: the sixth wrong password for one name gets 429 in words
    for _ in range(5):
        page.goto(f"{base}/login")
        page.get_by_label("Name").fill("root")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong")
    page.get_by_label("Name").fill("root")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)  # even the right one, for a while
    with page.expect_response(f"{base}/login") as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many")
