"""People: a registered person is a tracker member with a passkey, has a role that decides
what they may do, can rotate their passkey, and can be disabled by an admin."""

from __future__ import annotations

import signal

import bencode2
import pytest
from click.testing import CliRunner
from conftest import basic_auth, token_header
from torrent_factories import info_hash_of, make_torrent, upload_file, write_files
from tracker_process import TrackerProcess, wait_for

from app.accounts import people
from app.accounts.auth import issue_token
from app.accounts.credentials import list_secret_documents
from app.cli.main import main
from app.store.events import event_log
from app.store.projections import rebuild_projections
from app.tracker import accounts, members
from app.tracker.accounts import hash_passkey

PASSWORD = "correct horse battery"
IH = "cd" * 20
PEER = b"-qB4630-" + b"P" * 12


def register(client, admin_auth, name="alice", role="member"):
    """Invite and register a person through the API; return their basic-auth headers."""
    made = client.post("/api/invites", json={"role": role}, headers=admin_auth).get_json()
    response = client.post(
        "/api/register", json={"invite": made["secret"], "name": name, "password": PASSWORD}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return basic_auth(name, PASSWORD)


def profile(client, headers):
    response = client.get("/api/profile", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "private, no-store"
    return response.get_json()


def test_registering_issues_a_passkey_the_tracker_knows_and_the_log_never_holds(
    client, db, admin_auth
):
    alice = register(client, admin_auth)
    shown = profile(client, alice)
    assert (shown["name"], shown["role"], shown["state"]) == ("alice", "member", "active")
    assert (shown["uploaded"], shown["downloaded"], shown["ratio"], shown["snatches"]) == (
        0,
        0,
        None,
        0,
    )
    passkey = shown["passkey"]
    assert shown["announce_url"].endswith(f"/announce?passkey={passkey}")
    found = members.find_user_by_passkey(db, passkey)
    assert found is not None and found["name"] == "alice"
    assert found["user_id"] == people.member_user_id("alice") == shown["tracker_user_id"]
    log = str(event_log(db).server.get_json(f"{event_log(db).path}/_all_docs", include_docs=True))
    assert passkey not in log and hash_passkey(passkey) in log
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_rotated_passkey_replaces_the_old_one_at_once(client, db, admin_auth):
    alice = register(client, admin_auth)
    old = profile(client, alice)["passkey"]
    rotated = client.post("/api/profile/passkey", headers=alice)
    assert rotated.status_code == 200
    new = rotated.get_json()["passkey"]
    assert new != old and profile(client, alice)["passkey"] == new
    assert members.find_user_by_passkey(db, old) is None
    assert members.find_user_by_passkey(db, new)["name"] == "alice"
    stored = [d.get("passkey") for d in list_secret_documents(db) if d.get("type") == "passkey"]
    assert stored == [new]


def test_an_uploader_uploads_and_a_logged_in_member_downloads_with_their_own_passkey(
    client, db, admin_auth, clock, tmp_path
):
    uploader = register(client, admin_auth, name="ulla", role="uploader")
    alice = register(client, admin_auth)
    passkey = profile(client, alice)["passkey"]
    data = make_torrent(write_files(tmp_path / "Artist - Album (2001) [FLAC]", {"01.flac": 9000}))
    assert upload_file(client, uploader, data).status_code == 201
    path = f"/api/torrents/{info_hash_of(data)}/download"
    # without a login and without ?passkey, nobody learns anything
    anonymous = client.get(path)
    assert anonymous.status_code == 400 and anonymous.get_json()["error"] == "missing_field"
    # a worker token named like a person does not get that person's passkey
    token = issue_token(db, "alice", "worker", actor="test", now=clock())
    assert client.get(path, headers=token_header(token)).status_code == 400
    own = client.get(path, headers=alice)
    assert own.status_code == 200, own.get_data(as_text=True)
    announce = bencode2.bdecode(own.data)[b"announce"].decode()
    assert announce.endswith(f"?passkey={passkey}")


@pytest.mark.parametrize(
    ("role", "upload_status"), [("member", 403), ("uploader", 400), ("admin", 400)]
)
def test_uploading_torrents_needs_the_uploader_role(client, admin_auth, role, upload_status):
    person = register(client, admin_auth, name=f"p-{role}", role=role)
    # an empty JSON body: uploaders get past authorization to the body's check (400)
    response = client.post("/api/torrents", json={}, headers=person)
    assert response.status_code == upload_status
    # every person may search
    assert client.get("/api/torrents?q=anything", headers=person).status_code == 200


def test_an_admin_disables_a_member_who_then_cannot_log_in_or_announce(
    client, db, admin_auth, clock, tmp_path
):
    alice = register(client, admin_auth)
    passkey = profile(client, alice)["passkey"]
    accounts.register_torrent(db, IH, 5, "Album", actor="test", now=clock())
    login = client.post("/api/session", json={"name": "alice", "password": PASSWORD})
    assert login.status_code == 200
    tracker = TrackerProcess(db, tmp_path)
    try:
        wait_for(lambda: b"complete" in tracker.announce(IH, PEER, passkey), 10, "the member")
        changed = client.patch("/api/users/alice", json={"disabled": True}, headers=admin_auth)
        assert changed.status_code == 200 and changed.get_json()["state"] == "disabled"
        wait_for(
            lambda: b"failure reason" in tracker.announce(IH, PEER, passkey),
            10,
            "the tracker to refuse the disabled member",
        )
        # the open session ended, and neither a new login nor basic auth works
        assert client.get("/api/session").status_code == 401
        again = client.post("/api/session", json={"name": "alice", "password": PASSWORD})
        assert again.status_code == 401
        # enabled again: the same passkey works again
        enabled = client.patch("/api/users/alice", json={"disabled": False}, headers=admin_auth)
        assert enabled.get_json()["state"] == "active"
        wait_for(lambda: b"complete" in tracker.announce(IH, PEER, passkey), 10, "the member")
        assert profile(client, alice)["passkey"] == passkey
    finally:
        tracker.stop(signal.SIGKILL)
    assert rebuild_projections(db, check_only=True).differing == []


def test_roles_and_the_right_to_invite_are_an_admins_to_give(client, db, admin_auth):
    alice = register(client, admin_auth)
    assert client.get("/api/users", headers=alice).status_code == 403
    assert (
        client.patch("/api/users/alice", json={"role": "admin"}, headers=alice).status_code == 403
    )
    allowed = client.patch("/api/users/alice", json={"can_invite": True}, headers=admin_auth)
    assert allowed.get_json()["can_invite"] is True
    # a member allowed to invite invites members, not uploaders, and sees only their invites
    made = client.post("/api/invites", json={}, headers=alice)
    assert made.status_code == 201 and made.get_json()["inviter"] == "alice"
    refused = client.post("/api/invites", json={"role": "uploader"}, headers=alice)
    assert refused.status_code == 403
    client.post("/api/invites", json={}, headers=admin_auth)
    assert [i["inviter"] for i in client.get("/api/invites", headers=alice).get_json()] == ["alice"]
    # the admin makes alice an uploader; an admin cannot demote or disable themselves
    promoted = client.patch("/api/users/alice", json={"role": "uploader"}, headers=admin_auth)
    assert promoted.get_json()["role"] == "uploader"
    assert client.post("/api/torrents", json={}, headers=alice).status_code == 400
    own = client.patch("/api/users/root", json={"role": "member"}, headers=admin_auth)
    assert own.status_code == 403 and own.get_json()["error"] == "forbidden"
    bad = client.patch("/api/users/alice", json={"role": "king"}, headers=admin_auth)
    assert bad.status_code == 400 and bad.get_json()["error"] == "validation_failed"
    missing = client.patch("/api/users/nobody", json={"role": "member"}, headers=admin_auth)
    assert missing.status_code == 404 and missing.get_json()["error"] == "user_not_found"
    listed = {p["name"]: p for p in client.get("/api/users", headers=admin_auth).get_json()}
    assert listed["alice"]["role"] == "uploader" and listed["root"]["role"] == "admin"
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_people_commands_manage_roles_passkeys_and_access(client, db, admin_auth):
    register(client, admin_auth)
    runner = CliRunner(
        env={
            "DISTLEECH_CONFIG": "/nonexistent/config.yaml",
            "DISTLEECH_COUCHDB__URL": db.server_url,
            "DISTLEECH_COUCHDB__DATABASE": db.name,
        }
    )
    old = people.get_passkey(db, "alice")
    result = runner.invoke(main, ["user", "role", "alice", "uploader", "--invites"])
    assert result.exit_code == 0, result.output
    rotated = runner.invoke(main, ["user", "passkey", "alice"])
    assert rotated.exit_code == 0 and rotated.output.strip() == people.get_passkey(db, "alice")
    assert rotated.output.strip() != old
    assert runner.invoke(main, ["user", "disable", "alice"]).exit_code == 0
    listing = runner.invoke(main, ["user", "list"])
    assert "alice  uploader  disabled  may invite" in listing.output
    assert members.find_user_by_passkey(db, rotated.output.strip()) is None
    assert runner.invoke(main, ["user", "enable", "alice"]).exit_code == 0
    assert members.find_user_by_passkey(db, rotated.output.strip())["name"] == "alice"
    unknown = runner.invoke(main, ["user", "disable", "nobody"])
    assert unknown.exit_code == 1 and "user_not_found" in unknown.output


def test_the_running_tracker_refuses_a_rotated_passkey_within_a_moment(
    client, db, admin_auth, clock, tmp_path
):
    alice = register(client, admin_auth)
    old = profile(client, alice)["passkey"]
    accounts.register_torrent(db, IH, 5, "Album", actor="test", now=clock())
    tracker = TrackerProcess(db, tmp_path)
    try:
        wait_for(lambda: b"complete" in tracker.announce(IH, PEER, old), 10, "the old passkey")
        new = client.post("/api/profile/passkey", headers=alice).get_json()["passkey"]
        wait_for(
            lambda: b"failure reason" in tracker.announce(IH, PEER, old),
            10,
            "the tracker to refuse the old passkey",
        )
        assert b"complete" in tracker.announce(IH, PEER, new)
    finally:
        tracker.stop(signal.SIGKILL)
