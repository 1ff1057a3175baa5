"""The dashboard and the inventory in chromium: the numbers a person reads are the API's,
the chart is drawn, new events appear by themselves, and a phone's width fits."""

from __future__ import annotations

import re

import pytest
import requests
from browser import fits_the_width, log_in, screenshot
from factories import make_albums
from playwright.sync_api import expect

from app.accounts.auth import add_user
from scheduler import jobs

PASSWORD = "correct horse battery"
PTH = "https://passtheheadphones.me/"
PHONE = {"width": 375, "height": 667}


@pytest.fixture
def busy_site(live_server, db, clock, worker):
    """A site with a history: albums leased and found over 20 minutes, snapshots between."""
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    make_albums(db, 12, now=clock(), artist="Cockburn, Bruce", title="Night Vision {i}")
    make_albums(db, 3, now=clock(), artist="Mitchell, Joni", title="Blue {i}", start_line=20)
    jobs.snapshot_stats(db, clock())
    for found in (4, 2):
        lease_and_find(live_server.url, worker, rows=found + 1, found=found)
        clock.advance(minutes=10)
        jobs.snapshot_stats(db, clock())
    requests.post(
        f"{live_server.url}/api/worker/heartbeat",
        data={"name": "worker-1", "status": "looking for albums"},
        headers=worker,
        timeout=10,
    )
    return live_server


def lease_and_find(url, worker, *, rows, found):
    albums = requests.get(f"{url}/metadata/{rows}", headers=worker, timeout=10).json()["albums"]
    body = {str(a["id"]): [{"site": PTH, "torrentId": a["id"] % 1000}] for a in albums[:found]}
    requests.post(f"{url}/metadata/submit", json=body, headers=worker, timeout=10)


def watch_console(page) -> list[str]:
    """Collect console errors (a CSP violation is one) while the test runs."""
    errors: list[str] = []

    def on_console(message):
        # chromium asks for /favicon.ico by itself; the site has none (not this page's doing)
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location['url']})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_the_dashboard_shows_the_apis_numbers_and_draws_the_chart(page, busy_site, worker, clock):
    url = busy_site.url
    errors = watch_console(page)
    log_in(page, url, "alice", PASSWORD)
    expect(page).to_have_title("Dashboard · distleech")

    # every queue count a person reads is the one GET /stats gives a script
    api = requests.get(f"{url}/stats", headers={"Accept": "application/json"}, timeout=10).json()
    assert api["queues"]["metadata"]["found"] == 6
    for queue, states in api["queues"].items():
        for state, count in states.items():
            cell = page.locator(f'td[data-queue="{queue}"][data-state="{state}"]')
            assert int(cell.inner_text().replace(",", "")) == count, (queue, state)
    assert page.locator('[data-stat="albums"]').inner_text() == str(api["albums"]) == "15"

    # the chart is drawn: a canvas with painted pixels
    chart = page.locator("#throughput-chart[data-drawn=true] canvas")
    expect(chart).to_be_visible()
    painted = chart.evaluate(
        """canvas => {
            const pixels = canvas.getContext("2d")
                .getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) count++; }
            return count;
        }"""
    )
    assert painted > 500
    expect(page.locator(".u-legend")).to_contain_text("metadata done per hour")
    expect(page.locator("#worker-table")).to_contain_text("looking for albums")
    screenshot(page, "dashboard")

    # a worker leases an album: the event list shows it without a reload
    expect(page.locator("#events-feed")).not_to_contain_text("leased 1 album")
    clock.advance(seconds=1)
    requests.get(f"{url}/metadata/1", headers=worker, timeout=10)
    expect(page.locator("#events-feed")).to_contain_text("worker-1 leased 1 album", timeout=12_000)
    assert errors == []


def test_the_inventory_finds_an_album_and_tells_its_history(page, busy_site):
    url = busy_site.url
    errors = watch_console(page)
    log_in(page, url, "alice", PASSWORD, "/inventory")
    expect(page).to_have_title("Inventory · distleech")
    expect(page.locator("#album-table tbody tr")).to_have_count(15)
    screenshot(page, "inventory")

    page.get_by_label("Artist or title").fill("joni blue")
    page.get_by_role("button", name="Show albums").click()
    expect(page.locator("#album-table tbody tr")).to_have_count(3)
    page.get_by_role("link", name="Blue 1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Blue 1")
    expect(page.locator("#album-history")).to_contain_text("Imported into the inventory")
    assert errors == []


def test_the_dashboard_reads_without_javascript(browser, busy_site):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, busy_site.url, "alice", PASSWORD)
        expect(page.locator('td[data-queue="metadata"][data-state="found"]')).to_have_text("6")
        expect(page.locator("#events-feed")).to_contain_text("leased")
        page.get_by_text("Throughput as a table").click()
        expect(page.locator(".chart-table table")).to_contain_text(re.compile(r"\d+\.\d"))
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/", "/inventory"])
def test_the_pages_fit_a_phone_screen(page, busy_site, path):
    page.set_viewport_size(PHONE)
    log_in(page, busy_site.url, "alice", PASSWORD, path)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert fits_the_width(page)
