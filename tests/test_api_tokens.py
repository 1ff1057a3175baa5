"""Worker and queuer tokens over HTTP: admins issue, list and revoke them, as the CLI does."""

from __future__ import annotations

import pytest
from conftest import basic_auth, token_header

from app.accounts.auth import add_user
from app.store.projections import rebuild_projections

PASSWORD = "correct horse battery"


def test_an_admin_issues_a_token_that_works_once_shown_then_revokes_it(client, db, admin_auth):
    # issued: the token is answered this once, and a worker endpoint accepts it
    issued = client.post("/api/tokens", json={"name": "w1", "role": "worker"}, headers=admin_auth)
    assert issued.status_code == 201
    body = issued.get_json()
    assert (body["name"], body["role"]) == ("w1", "worker") and body["id"]
    assert issued.headers["Cache-Control"] == "no-store"
    token = body["token"]
    assert client.get("/api/worker/next", headers=token_header(token)).status_code in (200, 204)

    # listed by name, role and state, never with the token
    listed = client.get("/api/tokens", headers=admin_auth)
    assert listed.status_code == 200
    assert listed.get_json() == [
        {"name": "w1", "id": body["id"], "role": "worker", "revoked": False}
    ]
    assert token not in listed.get_data(as_text=True)

    # revoked: refused at once by this process
    revoked = client.delete("/api/tokens/w1", headers=admin_auth)
    assert revoked.status_code == 200 and revoked.get_json() == {"name": "w1", "revoked": 1}
    refused = client.get("/api/worker/next", headers=token_header(token))
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_credentials"
    assert client.get("/api/tokens", headers=admin_auth).get_json()[0]["revoked"] is True
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_taken_name_and_an_unknown_one_get_their_codes(client, admin_auth):
    made = client.post("/api/tokens", json={"name": "q", "role": "queuer"}, headers=admin_auth)
    assert made.status_code == 201
    again = client.post("/api/tokens", json={"name": "q", "role": "worker"}, headers=admin_auth)
    assert again.status_code == 409 and again.get_json()["error"] == "already_exists"
    missing = client.delete("/api/tokens/nobody", headers=admin_auth)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert len(client.get("/api/tokens", headers=admin_auth).get_json()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"name": "w", "role": "admin"},
        {"name": "w"},
        {"name": "bad name", "role": "worker"},
        {"name": "w", "role": "worker", "extra": 1},
        {"name": "x" * 65, "role": "worker"},
    ],
)
def test_bad_token_bodies_are_refused_and_change_nothing(client, admin_auth, body):
    response = client.post("/api/tokens", json=body, headers=admin_auth)
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_failed"
    assert client.get("/api/tokens", headers=admin_auth).get_json() == []


def test_tokens_are_for_admins_only(client, db, clock, worker_token):
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    alice = basic_auth("alice", PASSWORD)
    for headers in (alice, token_header(worker_token)):
        assert client.get("/api/tokens", headers=headers).status_code == 403
        made = client.post("/api/tokens", json={"name": "x", "role": "worker"}, headers=headers)
        assert made.status_code == 403
        assert client.delete("/api/tokens/worker-1", headers=headers).status_code == 403
    assert client.get("/api/tokens").status_code == 401


def test_with_a_session_changes_need_the_csrf_token(client, admin_auth):
    login = client.post("/api/session", json={"name": "root", "password": PASSWORD})
    csrf = login.get_json()["csrf_token"]
    body = {"name": "w1", "role": "worker"}
    refused = client.post("/api/tokens", json=body)
    assert refused.status_code == 403 and refused.get_json()["error"] == "csrf_failed"
    made = client.post("/api/tokens", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
