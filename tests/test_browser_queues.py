"""The queue admin pages in chromium: CSV import with progress, leases, the archive queue."""

from __future__ import annotations

import re

import requests
from browser import fits_the_width, log_in, screenshot
from conftest import token_header, write_csv
from playwright.sync_api import expect

PASSWORD = "correct horse battery"


def test_import_then_lease_then_release(page, live_server, admin_auth, worker, tmp_path):
    base = live_server.url
    log_in(page, base, "root", PASSWORD)

    # the admin imports a CSV and watches it reach the final summary
    rows = [("Cockburn, Bruce", f"Album {i}") for i in range(300)] + [("", "No Artist")]
    csv_path = write_csv(tmp_path / "inventory.csv", rows)
    page.goto(f"{base}/admin/import")
    expect(page).to_have_title(re.compile("^Import an inventory"))
    page.get_by_label("Inventory CSV file").set_input_files(str(csv_path))
    page.get_by_role("button", name="Import").click()
    expect(page).to_have_url(re.compile(r"/admin/import/[0-9a-f]{16}$"))
    expect(page.get_by_role("heading", name="Import finished")).to_be_visible(timeout=20000)
    expect(page.locator(".figures")).to_contain_text("Albums added300")
    expect(page.get_by_text("Line 302: empty Artist Name")).to_be_visible()

    # a worker leases three albums over HTTP; the admin sees them with their holder
    leased = requests.get(f"{base}/metadata/3", headers=worker, timeout=10).json()["albums"]
    assert len(leased) == 3
    page.goto(f"{base}/admin/queues")
    expect(page).to_have_title(re.compile("^Leases"))
    metadata = page.locator("section", has=page.get_by_role("heading", name="Albums (metadata)"))
    expect(metadata.locator("tbody tr")).to_have_count(3)
    expect(metadata).to_contain_text("worker-1")
    screenshot(page, "admin-queues")

    # releasing one: it is gone from the leased list, and the page says so
    first = leased[0]
    metadata.get_by_role("button", name=f"Release {first['sortArtist']}: {first['album']}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Released album:{first['id']}")
    expect(metadata.locator("tbody tr")).to_have_count(2)
    expect(metadata).not_to_contain_text(f"album:{first['id']}")

    # on a phone's width nothing scrolls sideways
    page.set_viewport_size({"width": 375, "height": 667})
    page.reload()
    assert fits_the_width(page)


def test_archive_page_shows_a_failure_and_retry_queues_it_again(
    page, live_server_factory, admin_auth, worker, queuer_token
):
    server = live_server_factory(leases={"archive_max_attempts": 1})
    base, queuer = server.url, token_header(queuer_token)
    url = "https://example.org/videos/removed-long-name-" + "x" * 60
    task = requests.post(f"{base}/api/worker/queue", data={"url": url}, headers=queuer, timeout=10)
    task_id = task.json()["id"]
    assert (
        requests.get(f"{base}/api/worker/next", headers=worker, timeout=10).json()["id"] == task_id
    )
    # another URL, queued after: it waits, and is not failed
    requests.post(
        f"{base}/api/worker/queue",
        data={"url": "https://example.org/ok", "mode": "1"},
        headers=queuer,
        timeout=10,
    )
    failed = {"id": task_id, "status": "failed", "reason": "HTTP 410: the video was removed"}
    requests.post(f"{base}/api/worker/complete", data=failed, headers=worker, timeout=10)

    log_in(page, base, "root", PASSWORD)
    page.goto(f"{base}/admin/archive")
    expect(page).to_have_title(re.compile("^Archive queue"))
    row = page.locator("tbody tr", has_text=url)
    expect(row).to_contain_text("HTTP 410: the video was removed")
    expect(row).to_contain_text("failed")
    screenshot(page, "admin-archive")

    # filter to the failed ones, then retry: the task is ready again
    page.get_by_label("Show").select_option("failed")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"state=failed"))
    page.get_by_role("button", name=f"Retry {url}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Task {task_id} is queued again.")
    expect(page.get_by_text("No failed tasks.")).to_be_visible()
    page.get_by_label("Show").select_option("ready")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("tbody tr", has_text=url)).to_contain_text("ready")

    page.set_viewport_size({"width": 375, "height": 667})
    page.reload()
    assert fits_the_width(page)
