"""One-time invites: an admin makes a secret, one person registers with it, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import basic_auth

from app.accounts import invites
from app.accounts.credentials import list_secret_documents
from app.cli.main import main
from app.errors import InvalidInviteError
from app.store.events import event_log
from app.store.projections import rebuild_projections

PASSWORD = "correct horse battery"


def invite(client, admin_auth, **body):
    response = client.post("/api/invites", json=body, headers=admin_auth)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def register(client, secret, name="alice", password=PASSWORD):
    return client.post("/api/register", json={"invite": secret, "name": name, "password": password})


def test_an_invite_lets_one_person_register_once(client, db, admin_auth):
    made = invite(client, admin_auth)
    assert (made["role"], made["state"], made["inviter"]) == ("member", "open", "root")
    response = register(client, made["secret"])
    assert response.status_code == 201
    assert response.get_json() == {"name": "alice", "role": "member"}
    # the new member logs in with the password they chose; members are not admins:
    # they see only their own invites and may not invite unless an admin allows it
    alice = basic_auth("alice", PASSWORD)
    assert client.get("/api/invites", headers=alice).get_json() == []
    assert client.post("/api/invites", json={}, headers=alice).status_code == 403
    again = register(client, made["secret"], name="mallory")
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_invite"
    assert "used" in again.get_json()["reason"]
    [listed] = client.get("/api/invites", headers=admin_auth).get_json()
    assert (listed["state"], listed["user"]) == ("used", "alice")
    assert "secret" not in listed
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_secret_is_never_stored_and_never_in_the_log(client, db, admin_auth):
    made = invite(client, admin_auth)
    register(client, made["secret"])
    rows = event_log(db).server.get_json(f"{event_log(db).path}/_all_docs", include_docs=True)
    assert made["secret"] not in str(rows) and PASSWORD not in str(rows)
    assert made["secret"] not in str(list_secret_documents(db))


def test_expired_revoked_and_unknown_invites_are_refused_and_change_nothing(
    client, db, admin_auth, clock
):
    expired = invite(client, admin_auth, days=1)
    revoked = invite(client, admin_auth)
    response = client.delete(f"/api/invites/{revoked['id']}", headers=admin_auth)
    assert response.get_json()["state"] == "revoked"
    assert client.delete("/api/invites/nosuch", headers=admin_auth).status_code == 404
    clock.advance(days=2)
    for secret, word in ((expired["secret"], "expired"), (revoked["secret"], "revoked")):
        refused = register(client, secret)
        assert refused.status_code == 400 and word in refused.get_json()["reason"]
    assert register(client, "no-such-secret").get_json()["error"] == "invalid_invite"
    assert db.get_or_none("user:alice") is None


def test_a_taken_name_keeps_the_invite_open(client, db, admin_auth):
    first, second = invite(client, admin_auth), invite(client, admin_auth)
    assert register(client, first["secret"]).status_code == 201
    taken = register(client, second["secret"])
    assert taken.status_code == 409 and taken.get_json()["error"] == "already_exists"
    assert register(client, second["secret"], name="bob").status_code == 201


def test_bad_registrations_are_refused_with_their_codes(client, admin_auth):
    made = invite(client, admin_auth)
    weak = register(client, made["secret"], password="short")
    assert weak.status_code == 400
    assert register(client, made["secret"], name="no spaces").status_code == 400
    missing = client.post("/api/register", json={"invite": made["secret"]})
    assert missing.get_json()["error"] == "validation_failed"
    assert register(client, made["secret"]).status_code == 201  # still open after all that


def test_invites_are_for_admins_only(client, worker):
    assert client.post("/api/invites", json={}).status_code == 401
    assert client.post("/api/invites", json={}, headers=worker).status_code == 403
    assert client.get("/api/invites", headers=worker).status_code == 403


def test_an_invite_can_make_an_uploader_or_an_admin(client, admin_auth):
    made = invite(client, admin_auth, role="admin", days=0.5)
    assert register(client, made["secret"], name="carol").get_json()["role"] == "admin"
    assert client.get("/api/invites", headers=basic_auth("carol", PASSWORD)).status_code == 200
    bad = client.post("/api/invites", json={"role": "emperor"}, headers=admin_auth)
    assert bad.get_json()["error"] == "validation_failed"


def test_two_registrations_racing_for_one_invite_make_one_user(db, clock, monkeypatch):
    """The second request read the invite as open before the first recorded it: the
    invite's projection decides, and the user the loser had created is removed."""
    secret, made = invites.create_invite(db, inviter="cli:test", now=clock())
    assert invites.register(db, secret, "alice", PASSWORD, now=clock())["name"] == "alice"
    monkeypatch.setattr(invites, "_check_open", lambda invite, now: None)  # read it as open
    with pytest.raises(InvalidInviteError, match="used a moment ago"):
        invites.register(db, secret, "bob", PASSWORD, now=clock() + timedelta(seconds=1))
    assert db.get("user:bob")["state"] == "removed"  # recorded, then put back: both facts
    assert db.get(made["_id"])["user"] == "alice"
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_cli_creates_and_lists_invites(db):
    env = {
        "DISTLEECH_CONFIG": "/nonexistent/config.yaml",
        "DISTLEECH_COUCHDB__URL": db.server_url,
        "DISTLEECH_COUCHDB__DATABASE": db.name,
    }
    created = CliRunner().invoke(main, ["invite", "create", "--role", "uploader"], env=env)
    assert created.exit_code == 0, created.output
    link = created.stdout.strip().splitlines()[0]
    assert link.startswith("http://127.0.0.1:5000/register?invite=")  # server.host and port
    secret = link.split("invite=", 1)[1]
    assert len(secret) >= 32
    listed = CliRunner().invoke(main, ["invite", "list"], env=env)
    assert "uploader" in listed.output and "open" in listed.output
    assert secret not in listed.output
    invite_id = listed.output.split()[0]
    revoked = CliRunner().invoke(main, ["invite", "revoke", invite_id], env=env)
    assert revoked.exit_code == 0 and f"invite {invite_id} revoked" in revoked.output
    assert "revoked" in CliRunner().invoke(main, ["invite", "list"], env=env).output
    again = CliRunner().invoke(main, ["invite", "revoke", "0000"], env=env)
    assert again.exit_code == 1 and "not_found" in again.output


@pytest.mark.parametrize(
    "password", ["short1!", "aaaaaaaaaaaa", "abababababab", "my-alice-password", "ALICE2026!!"]
)
def test_weak_passwords_are_refused_and_the_invite_stays_open(client, admin_auth, password):
    made = invite(client, admin_auth)
    response = register(client, made["secret"], password=password)
    assert response.status_code == 400 and response.get_json()["error"] == "validation_failed"
    assert "not containing your name" in response.get_json()["reason"]
    assert register(client, made["secret"]).status_code == 201  # still open
