"""The admin pages: people and invites, tokens, the whitelist and tracked torrents,
each form doing what its API twin does, with the same rules."""

from __future__ import annotations

import re
from html import unescape

import pytest
from conftest import token_header

from app.accounts import people
from app.accounts.auth import add_user, role_of
from app.accounts.invites import create_invite
from app.accounts.sessions import CSRF_FIELD
from app.tracker import accounts

PASSWORD = "correct horse battery"
IH = "cd" * 20
ADMIN_PAGES = ["/admin", "/admin/people", "/admin/tokens", "/admin/whitelist", "/admin/tracked"]


@pytest.fixture
def root(client, admin_auth):
    """The admin "root", logged in with `client`."""
    assert log_in(client, "root").status_code == 303
    return "root"


@pytest.fixture
def alice(db, clock):
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    people.issue_passkey(db, "alice", actor="test", now=clock())
    return "alice"


def log_in(client, name, password=PASSWORD):
    return client.post("/login", data={"name": name, "password": password})


def post(browser, path, **fields):
    """Send a form as the page that holds it would: with the CSRF token of that form."""
    return browser.post(path, data={CSRF_FIELD: form_csrf(browser, path), **fields})


def form_csrf(browser, action: str) -> str:
    """The CSRF token inside the form posting to `action`, on the page that shows it."""
    area = action.split("/")[2]
    page = "/admin/people" if area == "invites" else f"/admin/{area}"
    html = browser.get(page).text
    forms = re.findall(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', html, re.S)
    tokens = [re.search(rf'name="{CSRF_FIELD}" value="([^"]*)"', body) for _, body in forms]
    found = [t[1] for (url, _), t in zip(forms, tokens, strict=True) if url == action and t]
    if not found:  # a form for something not listed (an unknown name): any of the page's
        found = [t[1] for t in tokens if t]
    assert found and found[0], f"no CSRF token in a form of {page}"
    return found[0]


def role(db, name):
    return role_of(people.get_person(db, name))


def words(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_for_admins_only(client, alice, path):
    assert client.get(path).headers["Location"].startswith("/login?next=")
    log_in(client, "alice")
    refused = client.get(path)
    assert refused.status_code == 403 and "This page is for: admin." in refused.text


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_have_titles_and_are_never_cached(client, root, path):
    response = client.get(path)
    assert response.status_code == 200
    assert re.search(r"<title>[A-Z][^<]+ · distleech</title>", response.text)
    assert response.headers["Cache-Control"] == "private, no-store"


def test_the_index_links_every_admin_page_and_the_queues(client, root):
    page = client.get("/admin").text
    for path in [*ADMIN_PAGES[1:], "/admin/queues"]:
        assert f'href="{path}"' in page


def test_an_admin_changes_roles_invites_and_disables_and_enables(app, client, db, root, alice):
    member = app.test_client()
    assert log_in(member, "alice").status_code == 303
    page = words(client.get("/admin/people").text)
    assert "alice member active no 0 bytes 0 bytes none yet 0" in page

    promoted = post(client, "/admin/people/alice", role="uploader")
    assert promoted.headers["Location"] == "/admin/people?done=role#person-alice"
    assert "The role was changed." in client.get(promoted.headers["Location"]).text
    assert post(client, "/admin/people/alice", can_invite="true").status_code == 303
    assert role(db, "alice") == "uploader"
    assert people.get_person(db, "alice")["can_invite"] is True

    # disabled: alice's next page load sends her to log in, and the tracker forgets her
    passkey = people.get_passkey(db, "alice")
    disabled = post(client, "/admin/people/alice", disabled="true")
    assert disabled.headers["Location"] == "/admin/people?done=disabled#person-alice"
    assert member.get("/profile").headers["Location"] == "/login?next=%2Fprofile"
    assert "alice uploader disabled" in words(client.get("/admin/people").text)

    assert post(client, "/admin/people/alice", disabled="false").status_code == 303
    assert people.get_person(db, "alice")["state"] == "active"
    assert people.get_passkey(db, "alice") == passkey


def test_an_admin_cannot_demote_or_disable_themselves(client, db, root):
    page = client.get("/admin/people").text
    assert "Another admin changes you." in page
    for change in ({"role": "member"}, {"disabled": "true"}):
        response = post(client, "/admin/people/root", **change)
        assert response.status_code == 403
        assert "An admin cannot disable or demote themselves" in response.text
    assert people.get_person(db, "root")["state"] == "active"
    assert role(db, "root") == "admin"


@pytest.mark.parametrize(
    ("path", "fields", "status", "said"),
    [
        ("/admin/people/alice", {"role": "king"}, 400, "A role is one of member, uploader, admin"),
        ("/admin/people/alice", {"disabled": "maybe"}, 400, "disabled is true or false"),
        ("/admin/people/alice", {}, 400, "Choose a role"),
        ("/admin/people/nobody", {"role": "member"}, 404, "No user 'nobody'."),
    ],
)
def test_a_bad_change_is_refused_in_words(client, db, root, alice, path, fields, status, said):
    response = post(client, path, **fields)
    assert response.status_code == status
    assert said in unescape(response.text) and "Traceback" not in response.text
    assert role(db, "alice") == "member"


def test_forms_without_the_csrf_token_change_nothing(client, db, root, alice):
    response = client.post("/admin/people/alice", data={"disabled": "true"})
    assert response.status_code == 403 and "Reload the page" in response.text
    assert people.get_person(db, "alice")["state"] == "active"


def test_an_admin_sees_and_revokes_every_invite(client, db, clock, root):
    _, doc = create_invite(db, inviter="bob", role="uploader", days=7, now=clock())
    invite_id = doc["_id"].split(":", 1)[1]
    assert "bob uploader open" in words(client.get("/admin/people").text)
    response = post(client, f"/admin/invites/{invite_id}/revoke")
    assert response.headers["Location"] == "/admin/people?done=invite-revoked#invites"
    assert db.get(doc["_id"])["state"] == "revoked"
    unknown = post(client, "/admin/invites/0000/revoke")
    assert unknown.status_code == 404 and "No invite '0000'." in unescape(unknown.text)


def test_an_admin_issues_a_token_shown_once_and_revokes_it(client, root):
    issued = post(client, "/admin/tokens", name="fetcher-1", role="worker")
    assert issued.status_code == 201
    token = re.search(r'id="new-token" type="text" value="([^"]+)"', issued.text)[1]
    assert client.get("/api/worker/next", headers=token_header(token)).status_code in (200, 204)
    listed = client.get("/admin/tokens").text
    assert token not in listed and "fetcher-1 worker active" in words(listed)

    taken = post(client, "/admin/tokens", name="fetcher-1", role="queuer")
    assert taken.status_code == 409 and "exists; revoke it first" in unescape(taken.text)
    assert 'value="fetcher-1"' in taken.text  # what was typed is kept
    bad = post(client, "/admin/tokens", name="no spaces", role="worker")
    assert bad.status_code == 400 and "Invalid name" in unescape(bad.text)

    revoked = post(client, "/admin/tokens/fetcher-1/revoke")
    assert revoked.headers["Location"] == "/admin/tokens?done=token-revoked"
    assert client.get("/api/worker/next", headers=token_header(token)).status_code == 401
    assert "fetcher-1 worker revoked" in words(client.get("/admin/tokens").text)
    assert post(client, "/admin/tokens/fetcher-1/revoke").status_code == 404


def test_an_admin_manages_the_client_whitelist(client, db, root):
    assert "every client may announce" in client.get("/admin/whitelist").text
    added = post(client, "/admin/whitelist", prefix="-qB", client="qBittorrent")
    assert added.headers["Location"] == "/admin/whitelist?done=whitelist-added"
    assert accounts.list_whitelist(db) == [{"prefix": "-qB", "client": "qBittorrent"}]
    assert "-qB qBittorrent" in words(client.get("/admin/whitelist").text)

    again = post(client, "/admin/whitelist", prefix="-qB", client="other")
    assert again.status_code == 409 and "is on the whitelist" in unescape(again.text)
    bad = post(client, "/admin/whitelist", prefix="has space", client="x")
    assert bad.status_code == 400 and 'value="has space"' in bad.text

    removed = post(client, "/admin/whitelist/remove", prefix="-qB")
    assert removed.headers["Location"] == "/admin/whitelist?done=whitelist-removed"
    assert accounts.list_whitelist(db) == []
    assert post(client, "/admin/whitelist/remove", prefix="-qB").status_code == 404


def test_an_admin_sees_tracked_torrents_with_swarms_and_unregisters_one(
    app, client, db, clock, root
):
    accounts.register_torrent(db, IH, 42, "Band - Album (2001)", actor="t", now=clock())
    peers = {"p1": {"user_id": 1, "left": 0, "last_seen": 1}, "p2": {"user_id": 2, "left": 5}}
    app.extensions["distleech"].peers_db.put(
        {"_id": f"swarm:{IH}", "type": "swarm", "info_hash": IH, "seeders": 1, "leechers": 1}
        | {"peers": peers}
    )
    shown = words(client.get("/admin/tracked").text)
    assert f"Band - Album (2001) {IH} 42 api 0 1 1" in shown

    response = post(client, f"/admin/tracked/{IH}/unregister")
    assert response.headers["Location"] == "/admin/tracked?done=unregistered"
    assert not db.get(f"tracked:{IH}")["registered"]
    assert "tracks no torrent yet" in client.get("/admin/tracked").text
    again = post(client, f"/admin/tracked/{IH}/unregister")
    assert again.status_code == 404 and "does not track" in again.text
