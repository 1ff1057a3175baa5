"""The browser tests' plumbing: chromium opens the app over real HTTP and shows
what its JSON says."""

from __future__ import annotations

import re

import requests
from browser import fits_the_width
from factories import make_albums
from playwright.sync_api import expect


def test_the_stats_page_shows_the_album_count_its_json_gives(page, live_server, db, clock):
    # three albums imported, then /stats opened in chromium
    make_albums(db, 3, now=clock())
    page.goto(f"{live_server.url}/stats")
    expect(page).to_have_title("distleech stats")

    # the count a user reads is the one a script gets from the same URL
    shown = re.search(r"^Albums: (\d+)$", page.inner_text("body"), re.MULTILINE)
    assert shown is not None
    response = requests.get(
        f"{live_server.url}/stats", headers={"Accept": "application/json"}, timeout=10
    )
    assert response.status_code == 200
    assert int(shown[1]) == response.json()["albums"] == 3


def test_the_stats_page_fits_a_phone_screen(page, live_server):
    page.set_viewport_size({"width": 375, "height": 667})
    page.goto(f"{live_server.url}/stats")
    expect(page.locator("body")).to_contain_text(re.compile(r"Albums: \d+"))
    assert fits_the_width(page)
