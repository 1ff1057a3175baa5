"""The queue admin pages: leases and releasing one, CSV import with progress, the archive queue."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from factories import get_album, make_albums

from app.accounts.auth import add_user
from app.accounts.sessions import CSRF_FIELD
from app.queues import imports
from app.timeutil import iso

PASSWORD = "correct horse battery"
TEMPLATES = Path(__file__).resolve().parent.parent / "app" / "web" / "templates" / "queues"


def csrf_of(html: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found[1]


@pytest.fixture
def admin(client, admin_auth):
    """The test client, logged in as the admin through the login form."""
    assert client.post("/login", data={"name": "root", "password": PASSWORD}).status_code == 303
    return client


def post_form(client, path, **fields):
    token = csrf_of(client.get("/admin/queues").text)
    return client.post(path, data={CSRF_FIELD: token, **fields})


def test_leases_page_lists_holders_and_release_frees_the_album(admin, db, clock, worker):
    albums = make_albums(db, 2, now=clock())
    admin.get("/metadata/1", headers=worker)
    page = admin.get("/admin/queues")
    assert page.status_code == 200
    assert "<title>Leases" in page.text and "worker-1" in page.text
    leased = next(a for a in albums if get_album(db, a)["state"] == "leased")

    response = post_form(admin, "/admin/queues/release", id=f"album:{leased}")
    assert response.status_code == 303
    back = admin.get(response.headers["Location"])
    assert f"Released album:{leased}: it is ready in its queue again." in back.text
    assert "Nothing is leased." in back.text
    assert get_album(db, leased)["state"] == "ready"


def test_releasing_twice_says_why_with_a_404_page(admin, db, clock):
    [album] = make_albums(db, 1, now=clock())
    response = post_form(admin, "/admin/queues/release", id=f"album:{album}")
    assert response.status_code == 404
    assert "is not leased (it is ready); nothing to release." in response.text
    assert "Traceback" not in response.text
    bad = post_form(admin, "/admin/queues/release", id="")
    assert bad.status_code == 400 and "must be the id of a queued item" in bad.text


def test_forms_without_their_csrf_token_change_nothing(admin, db, clock, worker):
    [album] = make_albums(db, 1, now=clock())
    admin.get("/metadata/1", headers=worker)
    response = admin.post("/admin/queues/release", data={"id": f"album:{album}"})
    assert response.status_code == 403
    assert get_album(db, album)["state"] == "leased"


def test_members_get_a_403_page_and_strangers_the_login(client, db, clock):
    assert client.get("/admin/archive").headers["Location"].startswith("/login?next=")
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    client.post("/login", data={"name": "alice", "password": PASSWORD})
    for path in ("/admin/queues", "/admin/import", "/admin/archive"):
        assert client.get(path).status_code == 403


def wait_for_import(client, location, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.get(location)
        if "Import finished" in page.text or "Import failed" in page.text:
            return page
        assert "Refresh" in page.text  # without JavaScript: a link to see how far it got
        time.sleep(0.1)
    raise AssertionError("the import did not finish")


def upload(client, content: bytes, name="inventory.csv"):
    token = csrf_of(client.get("/admin/import").text)
    data = {CSRF_FIELD: token, "file": (io.BytesIO(content), name)}
    return client.post("/admin/import", data=data, content_type="multipart/form-data")


CSV = (
    "Artist Name,Album Title\n"
    + "".join(f'"Cockburn, Bruce",Album {i}\n' for i in range(1500))
    + ",No Artist\n"
).encode()


def test_import_shows_progress_then_the_summary_and_again_adds_nothing(admin, worker):
    response = upload(admin, CSV)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/admin/import/[0-9a-f]{16}", location)
    done = wait_for_import(admin, location)
    assert re.search(r"Albums added</dt><dd>1500<", done.text)
    assert re.search(r"Rows rejected</dt><dd>1<", done.text)
    assert "Line 1502: empty Artist Name" in done.text

    # the same file again: harmless, everything is already present
    second = upload(admin, CSV).headers["Location"]
    again = wait_for_import(admin, second)
    assert re.search(r"Albums added</dt><dd>0<", again.text)
    assert re.search(r"Already present</dt><dd>1500<", again.text)

    # the API shows the same summary for the page's import
    progress = admin.get("/api" + second.replace("/admin/import/", "/admin/imports/")).get_json()
    assert progress["summary"]["already_present"] == 1500 and progress["state"] == "finished"


def test_htmx_asks_for_the_progress_part_alone(admin):
    location = upload(admin, CSV).headers["Location"]
    wait_for_import(admin, location)
    part = admin.get(location, headers={"HX-Request": "true"})
    assert part.text.lstrip().startswith('<section id="import-progress"')
    assert "<html" not in part.text
    assert "hx-trigger" not in part.text  # finished: the polling stops


def test_a_wrong_file_is_refused_in_words_before_anything_is_written(admin, worker):
    response = upload(admin, b"Artist,Title\nA,B\n")
    assert response.status_code == 400
    assert "The CSV needs the columns" in response.text
    assert admin.get("/metadata/10", headers=worker).get_json() == {"albums": []}
    token = csrf_of(admin.get("/admin/import").text)
    empty = admin.post("/admin/import", data={CSRF_FIELD: token})
    assert empty.status_code == 400 and "Choose a CSV file to upload." in empty.text


def test_an_import_whose_process_died_reads_as_stopped(admin, db, clock):
    # what a process that died mid-import leaves: a running import whose heartbeat stops
    doc = {
        "_id": imports.progress_doc_id("0123456789abcdef"),
        "id": "0123456789abcdef",
        "file": "big.csv",
        "actor": "root",
        "started_at": iso(clock()),
        "heartbeat_at": iso(clock()),
        "state": "running",
        "error": None,
        "rows_read": 500,
        "bytes_read": 100,
        "total_bytes": 1000,
        "summary": {"added": 400, "already_present": 100, "rejected": 0, "rejections": []},
    }
    db.put(doc)
    assert "Importing…" in admin.get("/admin/import/0123456789abcdef").text
    clock.advance(minutes=5)
    page = admin.get("/admin/import/0123456789abcdef")
    assert "Import stopped" in page.text and "Import the same file again" in page.text
    assert admin.get("/admin/import/fedcba9876543210").status_code == 404


def fail_url(client, worker, queuer, url, reason):
    task_id = client.post("/api/worker/queue", data={"url": url}, headers=queuer).get_json()["id"]
    client.get("/api/worker/next", headers=worker)
    client.post(
        "/api/worker/complete",
        data={"id": task_id, "status": "failed", "reason": reason},
        headers=worker,
    )
    return task_id


@pytest.fixture
def admin_one_attempt(make_app, admin_auth):
    client = make_app(leases={"archive_max_attempts": 1}).test_client()
    client.post("/login", data={"name": "root", "password": PASSWORD})
    return client


def test_archive_page_shows_failures_with_reasons_and_retry_queues_again(
    admin_one_attempt, worker, queuer_token
):
    client, queuer = admin_one_attempt, {"X-AUTHENTICATION": queuer_token}
    task_id = fail_url(client, worker, queuer, "https://example.org/v/gone", "HTTP 410 Gone")
    page = client.get("/admin/archive?state=failed")
    assert "<title>Archive queue" in page.text
    assert "https://example.org/v/gone" in page.text and "HTTP 410 Gone" in page.text
    token = csrf_of(page.text)
    response = client.post(
        "/admin/archive/retry", data={CSRF_FIELD: token, "id": task_id, "state": "failed"}
    )
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/archive?state=failed&done=retried")
    back = client.get(response.headers["Location"])
    assert f"Task {task_id} is queued again." in back.text
    assert "No failed tasks." in back.text
    assert client.get("/api/worker/next", headers=worker).get_json()["id"] == task_id
    # a second click (an old page): nothing changes, and the page says so
    again = client.post("/admin/archive/retry", data={CSRF_FIELD: token, "id": task_id})
    assert "is not failed, so nothing was changed" in client.get(again.headers["Location"]).text


def test_queue_a_url_from_the_page(admin, worker):
    token = csrf_of(admin.get("/admin/archive").text)
    response = admin.post(
        "/admin/archive/queue",
        data={CSRF_FIELD: token, "url": "https://example.org/x", "mode": "1"},
    )
    assert response.status_code == 303
    assert "Queued as task" in admin.get(response.headers["Location"]).text
    assert admin.get("/api/worker/next", headers=worker).get_json()["mode"] == 1
    again = admin.post(
        "/admin/archive/queue", data={CSRF_FIELD: token, "url": "https://example.org/x"}
    )
    assert "waiting already" in admin.get(again.headers["Location"]).text
    bad = admin.post("/admin/archive/queue", data={CSRF_FIELD: token, "url": "ftp://x"})
    assert bad.status_code == 400
    assert "url must start with http:// or https://." in bad.text
    assert 'value="ftp://x"' in bad.text  # what was typed stays in the form


def test_confirmation_words_come_from_the_page_not_the_link(admin):
    page = admin.get("/admin/archive?done=<b>free+money</b>&item=1")
    assert "free money" not in page.text and "free+money" not in page.text


def test_queue_templates_have_no_inline_script_style_or_handlers():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script|\sstyle=|<style|\son[a-z]+=", text), template
