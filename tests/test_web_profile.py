"""The profile page: a person's totals, swarms and passkey; rotating it, changing the
password without being logged out, and invites, with the API's rules."""

from __future__ import annotations

import re
from html import unescape

import pytest

from app.accounts import people
from app.accounts.auth import add_user
from app.accounts.invites import create_invite
from app.accounts.sessions import CSRF_FIELD, SESSION_COOKIE
from app.tracker import accounts, members, peersdb

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new password"
IH = "ab" * 20


@pytest.fixture
def alice(client, db, clock):
    """A member registered by invite (so with a passkey), logged in with `client`."""
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    fields = {"invite": secret, "name": "alice", "password": PASSWORD, "password_again": PASSWORD}
    assert client.post("/register", data=fields).status_code == 303
    return "alice"


def log_in(client, name="alice", password=PASSWORD):
    return client.post("/login", data={"name": name, "password": password})


def csrf_of(client, action: str) -> str:
    """The CSRF token inside the profile's form posting to `action` (else any of its forms)."""
    html = client.get("/profile").text
    forms = dict(re.findall(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', html, re.S))
    body = forms.get(action) or next(b for a, b in forms.items() if a.startswith("/profile"))
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]*)"', body)
    assert found and found[1], f"no CSRF token in the form for {action}"
    return found[1]


def post(client, path, **fields):
    return client.post(path, data={CSRF_FIELD: csrf_of(client, path), **fields})


def invites_by(db, inviter):
    return [d for d in db.iter_prefix("invite:") if d.get("inviter") == inviter]


def passkey_on(html: str) -> str:
    found = re.search(r'<code class="secret" id="passkey-value">([0-9a-f]+)</code>', html)
    assert found, "no passkey on the page"
    return found[1]


def test_the_profile_shows_totals_swarms_and_the_passkey_and_is_never_cached(
    app, client, db, clock, alice
):
    # alice uploaded 3 MiB and seeds a tracked torrent right now
    tracked = people.tracker_member(db, "alice")
    accounts.register_torrent(db, IH, 7, "Some Album (2020) [FLAC]", actor="t", now=clock())
    db.put(tracked | {"uploaded": 3 * 1024 * 1024, "downloaded": 1024 * 1024, "snatches": 2})
    swarm = {"peers": {"p1": {"user_id": tracked["user_id"], "left": 0, "last_seen": 1}}}
    put_swarm(app.extensions["distleech"].peers_db, IH, swarm)

    response = client.get("/profile")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "<title>Your profile · distleech</title>" in response.text
    text = unescape(re.sub(r"<[^>]+>", " ", response.text))
    assert re.search(r"Uploaded\s+3\.0 MiB", text) and re.search(r"Ratio\s+3\.00", text)
    assert re.search(r"Snatches\s+2", text)
    assert "Some Album (2020) [FLAC]" in text  # the name of what they seed, not its hash
    passkey = people.get_passkey(db, "alice")
    assert passkey_on(response.text) == passkey
    assert f"/announce?passkey={passkey}" in response.text
    assert 'aria-current="page"' in response.text  # "Profile" in the navigation


def put_swarm(peers_db, info_hash, swarm):
    """Store a swarm as the tracker writes it (doc id and counts from peersdb)."""
    doc = {"_id": peersdb.swarm_doc_id(info_hash), "type": "swarm", "info_hash": info_hash}
    seeders, leechers = peersdb.count_peers(swarm["peers"])
    peers_db.put(doc | swarm | {"seeders": seeders, "leechers": leechers})


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/profile")
    assert response.headers["Location"] == "/login?next=%2Fprofile"


def test_rotating_the_passkey_replaces_it_at_once(client, db, alice):
    old = passkey_on(client.get("/profile").text)
    response = post(client, "/profile/passkey")
    assert response.status_code == 303
    assert response.headers["Location"] == "/profile?done=passkey#passkey"
    page = client.get(response.headers["Location"])
    new = passkey_on(page.text)
    assert new != old and "Your passkey was replaced" in page.text
    assert members.find_user_by_passkey(db, old) is None
    assert members.find_user_by_passkey(db, new)["name"] == "alice"


def test_a_form_without_its_csrf_token_is_refused_in_words(client, db, alice):
    old = people.get_passkey(db, "alice")
    response = client.post("/profile/passkey", data={})
    assert response.status_code == 403
    assert "Reload the page" in response.text and "Traceback" not in response.text
    assert people.get_passkey(db, "alice") == old


def test_changing_the_password_keeps_this_session_and_ends_the_others(app, client, alice):
    other = app.test_client()
    assert log_in(other).status_code == 303
    response = post(
        client,
        "/profile/password",
        current_password=PASSWORD,
        password=NEW_PASSWORD,
        password_again=NEW_PASSWORD,
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/profile?done=password#change-password"
    assert any(c.startswith(SESSION_COOKIE) for c in response.headers.getlist("Set-Cookie"))
    # this browser is still logged in; the other session ended
    assert "Your password was changed" in client.get(response.headers["Location"]).text
    assert other.get("/profile").headers["Location"] == "/login?next=%2Fprofile"
    # the new password logs in, the old one no longer does
    assert log_in(app.test_client(), password=PASSWORD).status_code == 401
    assert log_in(app.test_client(), password=NEW_PASSWORD).status_code == 303


@pytest.mark.parametrize(
    ("current", "new", "again", "status", "words"),
    [
        ("wrong password", NEW_PASSWORD, NEW_PASSWORD, 401, "Your current password is wrong."),
        (PASSWORD, NEW_PASSWORD, "something else", 400, "The two new passwords differ"),
        (PASSWORD, "short", "short", 400, "at least 8 characters"),
        ("", NEW_PASSWORD, NEW_PASSWORD, 400, "Enter your current password"),
    ],
)
def test_a_refused_password_change_says_why_and_changes_nothing(
    app, client, alice, current, new, again, status, words
):
    response = post(
        client, "/profile/password", current_password=current, password=new, password_again=again
    )
    assert response.status_code == status
    assert words in response.text
    assert 'aria-invalid="true" aria-describedby="password-error"' in response.text
    assert NEW_PASSWORD not in response.text
    assert log_in(app.test_client()).status_code == 303  # the old password still works


def test_too_many_wrong_current_passwords_answer_429(make_app, db, clock):
    add_user(db, "bob", PASSWORD, admin=False, actor="t", now=clock())
    client = make_app(auth={"login_failures_per_account": 2}).test_client()
    assert log_in(client, "bob").status_code == 303
    fields = {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    for _ in range(2):
        assert (
            post(client, "/profile/password", current_password="nope!", **fields).status_code == 401
        )
    response = post(client, "/profile/password", current_password=PASSWORD, **fields)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "Too many failed logins" in response.text


def test_a_member_without_the_right_to_invite_sees_no_invites(client, alice):
    page = client.get("/profile").text
    assert "Create an invite link" not in page
    refused = post(client, "/profile/invites", days="7")
    assert refused.status_code == 403
    assert "You may not invite; an admin can allow it." in refused.text


def test_an_allowed_member_invites_sees_the_link_once_and_revokes(client, db, clock, alice):
    people.change_person(db, "alice", can_invite=True, actor="root", now=clock())
    page = client.get("/profile").text
    assert '<label for="invite-days">' in page and 'id="invite-role"' not in page  # members only

    made = post(client, "/profile/invites", days="3", role="admin")  # a member's role is ignored
    assert made.status_code == 201 and made.headers["Cache-Control"] == "private, no-store"
    link = re.search(r'id="invite-link" type="text" value="([^"]+)"', made.text)[1]
    assert link.startswith("http://localhost/register?invite=")
    listed = client.get("/profile").text
    assert link not in listed  # shown once
    [invite] = invites_by(db, "alice")
    assert (invite["role"], invite["state"]) == ("member", "open")

    revoked = post(client, f"/profile/invites/{invite['_id'].split(':')[1]}/revoke")
    assert revoked.headers["Location"] == "/profile?done=invite-revoked#invites"
    assert db.get(invite["_id"])["state"] == "revoked"
    assert "The invite was revoked" in client.get(revoked.headers["Location"]).text


def test_a_member_cannot_revoke_someone_elses_invite(client, db, clock, alice):
    people.change_person(db, "alice", can_invite=True, actor="root", now=clock())
    _, other = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    response = post(client, f"/profile/invites/{other['_id'].split(':')[1]}/revoke")
    assert response.status_code == 404 and "of yours" in response.text
    assert db.get(other["_id"])["state"] == "open"


@pytest.mark.parametrize(("days", "words"), [("0", "Days is a number"), ("many", "Days is a")])
def test_bad_invite_days_are_refused_in_words(client, db, clock, alice, days, words):
    people.change_person(db, "alice", can_invite=True, actor="root", now=clock())
    response = post(client, "/profile/invites", days=days)
    assert response.status_code == 400 and words in response.text
    assert invites_by(db, "alice") == []


def test_an_admin_invites_any_role_with_the_public_url(make_app, db, clock, admin_auth):
    client = make_app(server={"public_url": "https://leech.example/"}).test_client()
    assert log_in(client, "root").status_code == 303
    assert 'id="invite-role"' in client.get("/profile").text
    made = post(client, "/profile/invites", days="7", role="uploader")
    assert made.status_code == 201
    assert 'value="https://leech.example/register?invite=' in made.text
    [invite] = invites_by(db, "root")
    assert invite["role"] == "uploader"
