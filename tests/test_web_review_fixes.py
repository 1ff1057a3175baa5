"""What the reviews of people and pages found, pinned down: sessions that must stay ended,
invites that must stop, names a URL cannot carry, text a link cannot put on a page, bad
numbers that must be a 4xx, a big import through the page, a form sent after a login
ended, pages no cache may keep, a retry at one site while another site saw a result."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from conftest import basic_auth, write_csv

from app.accounts import invites, people
from app.accounts.auth import add_user
from app.accounts.sessions import CSRF_FIELD
from app.errors import InvalidInviteError, ValidationFailedError
from app.queues.archive import apply_url_task_event

PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    return re.findall(rf'name="{CSRF_FIELD}" value="([^"]*)"', html)[-1]


def member(db, clock, name="alice", *, inviter="root", role="member"):
    secret, _ = invites.create_invite(db, inviter=inviter, role=role, now=clock())
    return invites.register(db, secret, name, PASSWORD, now=clock())


def test_enabling_a_person_again_does_not_bring_back_their_old_sessions(
    client, db, clock, admin_auth
):
    member(db, clock)
    assert client.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 303
    assert client.get("/profile").status_code == 200
    people.disable_person(db, "alice", actor="root", now=clock())
    clock.advance(seconds=1)
    people.enable_person(db, "alice", actor="root", now=clock())
    # the cookie from before the disable stays dead; a new login works
    assert client.get("/profile").headers["Location"].startswith("/login")
    assert client.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 303
    assert client.get("/profile").status_code == 200


@pytest.mark.parametrize("how", ["disabled", "demoted", "no_longer_invites"])
def test_invites_stop_working_when_their_inviter_may_no_longer_invite(db, clock, admin_auth, how):
    add_user(db, "boss", PASSWORD, admin=True, actor="test", now=clock())
    member(db, clock, "mia")
    people.change_person(db, "mia", can_invite=True, actor="root", now=clock())
    by_boss, _ = invites.create_invite(db, inviter="boss", role="admin", now=clock())
    by_mia, _ = invites.create_invite(db, inviter="mia", role="member", now=clock())
    if how == "disabled":
        people.disable_person(db, "boss", actor="root", now=clock())
        people.disable_person(db, "mia", actor="root", now=clock())
    elif how == "demoted":
        people.change_person(db, "boss", role="member", actor="root", now=clock())
        people.change_person(db, "mia", role="member", can_invite=False, actor="root", now=clock())
    else:
        people.change_person(db, "mia", can_invite=False, actor="root", now=clock())
        people.change_person(db, "boss", role="uploader", actor="root", now=clock())
    for secret in (by_boss, by_mia):
        with pytest.raises(InvalidInviteError, match="may no longer invite"):
            invites.register(db, secret, "mallory", PASSWORD, now=clock())
    assert db.get_or_none("user:mallory") is None


def test_invites_made_from_the_command_line_need_no_inviting_user(db, clock):
    secret, _ = invites.create_invite(db, inviter="cli:operator", role="admin", now=clock())
    assert invites.register(db, secret, "first", PASSWORD, now=clock())["state"] == "active"


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_names_of_only_dots_are_refused_as_a_url_path_cannot_carry_them(db, clock, name):
    secret, _ = invites.create_invite(db, inviter="cli:operator", now=clock())
    with pytest.raises(ValidationFailedError):
        invites.register(db, secret, name, PASSWORD, now=clock())


@pytest.fixture
def admin(client, admin_auth):
    assert client.post("/login", data={"name": "root", "password": PASSWORD}).status_code == 303
    return client


def test_a_crafted_link_cannot_put_words_on_the_archive_page(admin):
    crafted = "1. Your session expired: log in again at https://evil.example/login"
    page = admin.get("/admin/archive", query_string={"done": "queued", "item": crafted})
    assert "evil.example" not in page.text
    honest = admin.get("/admin/archive", query_string={"done": "queued", "item": "42"})
    assert "Queued as task 42." in honest.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/library", {"page": "\u00b2"}),
        ("/library", {"page": "9" * 5000}),
        ("/inventory", {"start": "\u00b2"}),
        ("/inventory", {"start": "9" * 5000}),
    ],
)
def test_odd_page_numbers_show_a_page_not_a_server_error(admin, path, params):
    assert admin.get(path, query_string=params).status_code < 500


def test_a_huge_task_id_is_a_400(client, admin_auth):
    response = client.post("/api/worker/retry", data={"id": "9" * 5000}, headers=admin_auth)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_task_id"


def test_the_import_page_takes_files_beyond_the_ordinary_body_limit(make_app, admin_auth, tmp_path):
    app = make_app(server={"max_body_bytes": 2000, "max_upload_bytes": 10_000_000})
    client = app.test_client()
    assert client.post("/login", data={"name": "root", "password": PASSWORD}).status_code == 303
    rows = [(f"Artist {n}", f"Album {n}") for n in range(300)]
    csv = write_csv(tmp_path / "big.csv", rows)
    assert csv.stat().st_size > 2000
    token = csrf_of(client.get("/admin/import").text)
    with csv.open("rb") as upload:
        response = client.post(
            "/admin/import", data={CSRF_FIELD: token, "file": (upload, "big.csv")}
        )
    assert response.status_code == 303, response.text[:500]
    # the API the same, with the session (its CSRF check reads the form too)
    with csv.open("rb") as upload:
        api = client.post(
            "/api/admin/import-csv",
            data={"file": (upload, "big.csv")},
            headers={"X-CSRF-Token": token},
        )
    assert api.status_code == 200, api.text[:500]


def test_a_form_sent_after_the_session_ended_comes_back_to_its_page(client, db, clock):
    member(db, clock, inviter="cli:operator")
    form_page = "http://localhost/profile"
    sent = client.post("/profile/passkey", headers={"Referer": form_page})
    assert sent.status_code == 303
    assert sent.headers["Location"] == "/login?next=%2Fprofile"
    elsewhere = client.post("/profile/passkey", headers={"Referer": "https://evil.example/x"})
    assert elsewhere.headers["Location"] == "/login?next=%2F"


def test_pages_for_a_logged_in_person_are_never_cached(admin):
    assert admin.get("/").headers["Cache-Control"] == "private, no-store"
    assert "no-store" in admin.get("/library").headers["Cache-Control"]


def test_an_invites_secret_is_not_cached(client, admin_auth):
    response = client.post("/api/invites", json={}, headers=admin_auth)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"


def test_a_retry_at_one_site_survives_a_result_another_site_recorded_at_that_version():
    def event(version, name, data, *, concurrent=False, site="a"):
        return {
            "_id": f"ev:{version}:{site}",
            "aggregate": "urltask:1",
            "version": version,
            "name": name,
            "data": data,
            "at": f"2026-01-01T12:00:0{version}.000000Z",
            "actor": f"admin@{site}",
            **({"concurrent": True} if concurrent else {}),
        }

    task = {"url": "https://e.org/v", "mode": 0, "id": 1}
    state: dict = {}
    apply_url_task_event(state, event(1, "queued", task))
    apply_url_task_event(state, event(2, "failed", {"attempt": 3, "reason": "gone", "final": True}))
    assert state["state"] == "failed"
    # site b recorded a stale result at version 3; site a, apart, retried at version 3
    apply_url_task_event(state, event(3, "failed", {"ignored": "stale"}, site="b"))
    apply_url_task_event(state, event(3, "retried", {**task, "after_attempts": 3}, concurrent=True))
    assert (state["state"], state["attempts"]) == ("ready", 0)
    # a second site's retry of the same round changes nothing more
    apply_url_task_event(state, event(4, "retried", {**task, "after_attempts": 3}, concurrent=True))
    assert state["state"] == "ready"


def test_basic_auth_people_keep_their_role_after_a_change_here(client, db, clock, admin_auth):
    member(db, clock)
    alice = basic_auth("alice", PASSWORD)
    assert client.get("/api/users", headers=alice).status_code == 403
    client.patch("/api/users/alice", json={"role": "admin"}, headers=admin_auth)
    assert client.get("/api/users", headers=alice).status_code == 200


@pytest.mark.parametrize(
    ("part", "page"),
    [
        (f"/library/counts?info_hash={'ab' * 20}", "/library?q=love"),
        ("/admin/import/0123456789abcdef", "/admin/import/0123456789abcdef"),
    ],
)
def test_a_part_htmx_refreshes_after_the_session_ended_sends_the_tab_to_log_in(client, part, page):
    response = client.get(
        part, headers={"HX-Request": "true", "HX-Current-URL": f"http://localhost{page}"}
    )
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?" + urlencode({"next": page})
    assert "Location" not in response.headers  # not a redirect htmx would follow and swap in
