"""Login sessions: a cookie after one login, CSRF on every change made with it,
logout and removal that count at once, and failed logins limited."""

from __future__ import annotations

import pytest
from conftest import basic_auth

from app.accounts.auth import add_user
from app.accounts.sessions import CSRF_HEADER, SESSION_COOKIE

PASSWORD = "correct horse battery"


@pytest.fixture
def alice(db, clock):
    add_user(db, "alice", PASSWORD, admin=True, actor="test", now=clock())
    return "alice"


def log_in(client, name="alice", password=PASSWORD, **environ):
    return client.post(
        "/api/session", json={"name": name, "password": password}, environ_base=environ
    )


def test_a_login_sets_a_safe_cookie_that_then_identifies_the_user(client, alice):
    response = log_in(client)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["role"]) == ("alice", "admin") and body["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    me = client.get("/api/session")  # the test client sends the cookie back
    assert me.status_code == 200 and me.get_json()["csrf_token"] == body["csrf_token"]
    assert client.get("/api/invites").status_code == 200  # an admin's page, no other credential


def test_over_https_the_cookie_is_secure(client, alice):
    response = client.post(
        "/api/session",
        json={"name": "alice", "password": PASSWORD},
        base_url="https://localhost",
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_change_with_a_session_needs_its_csrf_token(client, alice):
    token = log_in(client).get_json()["csrf_token"]
    refused = client.post("/api/invites", json={})
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf_failed"
    wrong = client.post("/api/invites", json={}, headers={CSRF_HEADER: "guess"})
    assert wrong.get_json()["error"] == "csrf_failed"
    assert client.get("/api/invites").get_json() == []  # nothing was made
    made = client.post("/api/invites", json={}, headers={CSRF_HEADER: token})
    assert made.status_code == 201


def test_logging_out_ends_the_session_at_once(client, alice):
    token = log_in(client).get_json()["csrf_token"]
    cookie = client.get_cookie(SESSION_COOKIE).value
    assert client.delete("/api/session", headers={CSRF_HEADER: token}).status_code == 200
    client.set_cookie(SESSION_COOKIE, cookie)  # a copy of the cookie kept somewhere
    ended = client.get("/api/session")
    assert ended.status_code == 401 and "log in again" in ended.get_json()["reason"]


def test_wrong_and_unknown_names_get_the_same_answer(client, alice):
    wrong = log_in(client, password="wrong password")
    unknown = log_in(client, name="nobody", password="wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()
    assert "Set-Cookie" not in wrong.headers


def test_failed_logins_are_limited_per_account(client, alice):
    for _ in range(5):
        assert log_in(client, password="wrong password").status_code == 401
    limited = log_in(client)  # even the right password, for a while
    assert limited.status_code == 429 and limited.get_json()["error"] == "too_many_attempts"
    assert int(limited.headers["Retry-After"]) > 0
    other = log_in(client, name="bob", password="whatever pw", REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 401  # another account is not limited by alice's failures


def test_failed_logins_are_limited_per_address(make_app, db, clock):
    client = make_app(auth={"login_failures_per_address": 3}).test_client()
    for name in ("a", "b", "c"):
        assert (
            log_in(client, name=name, password="wrong pw", REMOTE_ADDR="10.0.0.7").status_code
            == 401
        )
    assert log_in(client, name="d", password="wrong pw", REMOTE_ADDR="10.0.0.7").status_code == 429
    assert log_in(client, name="d", password="wrong pw", REMOTE_ADDR="10.0.0.8").status_code == 401


def test_a_removed_user_s_session_stops_working(client, db, alice, clock):
    log_in(client)
    db.put({**db.get("user:alice"), "state": "removed"})  # as the `removed` event projects it
    assert client.get("/api/session").status_code == 401


def test_a_session_expires(make_app, db, clock, alice):
    client = make_app(auth={"session_hours": 1}).test_client()
    log_in(client)
    clock.advance(minutes=61)
    assert client.get("/api/session").status_code == 401


def test_changing_the_password_needs_the_current_one(client, alice):
    token = log_in(client).get_json()["csrf_token"]
    headers = {CSRF_HEADER: token}
    bad = client.post("/api/password", json={"current": "nope", "new": "x" * 12}, headers=headers)
    assert bad.status_code == 401
    good = client.post(
        "/api/password", json={"current": PASSWORD, "new": "a new long password"}, headers=headers
    )
    assert good.status_code == 200
    client.delete("/api/session", headers=headers)
    assert log_in(client).status_code == 401
    assert log_in(client, password="a new long password").status_code == 200


def test_basic_auth_guesses_count_against_the_same_limit(client, alice):
    for _ in range(5):
        wrong = client.get("/api/session", headers=basic_auth("alice", "wrong password"))
        assert wrong.status_code == 401
    limited = client.get("/api/session", headers=basic_auth("alice", PASSWORD))
    assert limited.status_code == 429
    assert log_in(client).status_code == 429  # one limit, whichever way the guesses came


def test_a_new_password_ends_every_older_session(app, db, alice, clock):
    thief, owner = app.test_client(), app.test_client()
    log_in(thief)
    token = log_in(owner).get_json()["csrf_token"]
    changed = owner.post(
        "/api/password",
        json={"current": PASSWORD, "new": "a new long password"},
        headers={CSRF_HEADER: token},
    )
    assert changed.status_code == 200
    assert thief.get("/api/session").status_code == 401
    assert owner.get("/api/session").status_code == 401  # log in again with the new one
    assert log_in(owner, password="a new long password").status_code == 200


def test_with_a_session_leasing_needs_the_csrf_token_even_on_get(client, alice):
    """Two worker endpoints lease work on a GET; a link on another page must not."""
    token = log_in(client).get_json()["csrf_token"]
    assert client.get("/metadata/1").get_json()["error"] == "csrf_failed"
    assert client.get("/metadata/1", headers={CSRF_HEADER: token}).status_code == 200


def test_a_user_from_before_roles_logs_in_as_what_they_were(client, db, alice):
    assert "role" not in db.get("user:alice")  # made by `user add`, as before users had roles
    response = log_in(client)
    assert response.status_code == 200 and response.get_json()["role"] == "admin"


def test_bad_login_and_password_bodies_are_refused_and_change_nothing(client, db, alice):
    for body in ({"name": "alice"}, {"name": "alice", "password": PASSWORD, "extra": 1}, []):
        refused = client.post("/api/session", json=body)
        assert refused.status_code == 400 and refused.get_json()["error"] == "validation_failed"
        assert "Set-Cookie" not in refused.headers
    text = client.post("/api/session", data="name=alice", content_type="text/plain")
    assert text.status_code == 415
    token = log_in(client).get_json()["csrf_token"]
    before = db.get("user:alice")["_rev"]
    bad = client.post("/api/password", json={"new": "x" * 12}, headers={CSRF_HEADER: token})
    assert bad.get_json()["error"] == "validation_failed"
    weak = client.post(
        "/api/password", json={"current": PASSWORD, "new": "short"}, headers={CSRF_HEADER: token}
    )
    assert weak.status_code == 400
    assert db.get("user:alice")["_rev"] == before
    assert log_in(client).status_code == 200  # the old password still works
