"""Credentials live in the secrets database, never in the event log or the read model.

What a user notices: logging in works (after a password change, a rebuild, a
revocation), an old password stops working, and a member browsing the
databases (Fauxton) finds no password hash and no token hash anywhere.
"""

from __future__ import annotations

import json
import threading

import pytest
from conftest import basic_auth, token_header

from app.accounts import credentials
from app.accounts.auth import add_user, change_password, issue_token, list_tokens, revoke_token
from app.errors import AlreadyExistsError
from app.processes.bundled import node_available, running
from app.store.couch import CouchServer, DocumentNotFoundError, UnauthorizedError
from app.store.events import read_events
from app.store.projections import rebuild_projections
from app.store.setup import init_database

ADMIN_PW = "correct horse battery"
ALICE_PW, ALICE_NEW_PW = "first garden gate", "second garden gate"


def all_documents(database):
    """Every document a member could open in Fauxton (none if the database does not exist)."""
    if not database.server.database_exists(database.name):
        return []
    rows = database.server.get_json(f"{database.path}/_all_docs", include_docs=True)["rows"]
    return [row["doc"] for row in rows]


def whoami(client, headers):
    """Status of a guarded call: 200 in, 401 refused."""
    return client.get("/metadata/1", headers=headers).status_code


@pytest.fixture
def accounts(db, clock):
    """An admin, a user whose password changed, a live token and a revoked one."""
    add_user(db, "root", ADMIN_PW, admin=True, actor="test", now=clock())
    add_user(db, "alice", ALICE_PW, admin=False, actor="test", now=clock())
    clock.advance(minutes=1)
    change_password(db, "alice", ALICE_NEW_PW, actor="cli:alice", now=clock())
    live = issue_token(db, "worker-1", "worker", actor="test", now=clock())
    dead = issue_token(db, "worker-2", "worker", actor="test", now=clock())
    revoke_token(db, "worker-2", actor="test", now=clock())
    return {"live": live, "dead": dead}


def test_no_hash_in_the_read_model_or_the_event_log(db, accounts):
    secret_docs = credentials.list_secret_documents(db)
    hashes = [doc["hash"] for doc in secret_docs if doc["type"] == "password_hash"]
    token_hashes = [credentials.token_sha256(token) for token in accounts.values()]
    assert len(hashes) == 2
    assert {d["_id"] for d in secret_docs} >= {f"token_hash:{h}" for h in token_hashes}
    plaintexts = [ADMIN_PW, ALICE_PW, ALICE_NEW_PW, *accounts.values()]
    for database in (db, db.companion("events")):
        dump = json.dumps(all_documents(database))
        for secret in [*hashes, *token_hashes, *plaintexts, "scrypt:", "pbkdf2:"]:
            assert secret not in dump, f"{secret[:12]}… found in {database.name}"
    assert all_documents(db.companion("events")), "the log should hold the account events"
    # the secrets database holds hashes only, never what they hash
    dump = json.dumps(all_documents(credentials.secrets_db(db)))
    assert not [p for p in plaintexts if p in dump]


def test_user_events_record_the_facts_only(db, accounts):
    changes = read_events(db, "user:alice")
    assert [(c["name"], c["data"], c["actor"]) for c in changes] == [
        ("created", {"name": "alice", "admin": False}, "test"),
        ("password_changed", {}, "cli:alice"),
    ]


def test_token_ids_say_nothing_about_the_token(db, accounts):
    by_name = {t["name"]: t for t in list_tokens(db)}
    live = by_name["worker-1"]
    assert live["revoked"] is False and by_name["worker-2"]["revoked"] is True
    assert live["id"] not in credentials.token_sha256(accounts["live"])
    [issued] = read_events(db, f"token:{live['id']}")
    assert (issued["name"], issued["data"]) == ("issued", {"name": "worker-1", "role": "worker"})


def test_logins_after_a_password_change_and_a_revocation(make_app, accounts):
    client = make_app().test_client()
    assert whoami(client, basic_auth("root", ADMIN_PW)) == 200
    assert whoami(client, basic_auth("alice", ALICE_PW)) == 401
    assert whoami(client, basic_auth("alice", ALICE_NEW_PW)) == 403  # in, but not a worker
    assert whoami(client, token_header(accounts["live"])) == 200
    assert whoami(client, token_header(accounts["dead"])) == 401


def test_a_changed_password_cannot_be_read_back(db, clock):
    add_user(db, "alice", ALICE_PW, admin=False, actor="test", now=clock())
    secrets = credentials.secrets_db(db)
    first = secrets.get("password_hash:alice")
    change_password(db, "alice", ALICE_NEW_PW, actor="test", now=clock())
    revs = secrets.get("password_hash:alice", revs_info=True)["_revs_info"]
    assert {r["rev"]: r["status"] for r in revs}[first["_rev"]] == "missing"
    with pytest.raises(DocumentNotFoundError):
        secrets.get("password_hash:alice", rev=first["_rev"])
    assert credentials.get_password_hash(db, "alice") != first["hash"]


def test_a_forgotten_password_cannot_be_read_back(make_app, db, clock):
    add_user(db, "alice", ALICE_PW, admin=True, actor="test", now=clock())
    last = credentials.secrets_db(db).get("password_hash:alice")
    assert credentials.forget_password(db, "alice") is True
    assert credentials.get_password_hash(db, "alice") is None
    with pytest.raises(DocumentNotFoundError):
        credentials.secrets_db(db).get("password_hash:alice", rev=last["_rev"])
    assert whoami(make_app().test_client(), basic_auth("alice", ALICE_PW)) == 401
    assert credentials.forget_password(db, "alice") is False


def test_adding_an_existing_user_keeps_the_first_password(make_app, db, clock):
    add_user(db, "alice", ALICE_PW, admin=True, actor="test", now=clock())
    with pytest.raises(AlreadyExistsError):
        add_user(db, "alice", "an intruder's pw", admin=True, actor="test", now=clock())
    client = make_app().test_client()
    assert whoami(client, basic_auth("alice", ALICE_PW)) == 200
    assert whoami(client, basic_auth("alice", "an intruder's pw")) == 401


def test_logins_survive_a_rebuild_of_the_read_model(make_app, db, accounts):
    for doc_id in ["user:root", "user:alice", *(f"token:{t['id']}" for t in list_tokens(db))]:
        db.delete(doc_id, db.get(doc_id)["_rev"])
    rebuild_projections(db)
    client = make_app().test_client()
    assert whoami(client, basic_auth("root", ADMIN_PW)) == 200
    assert whoami(client, basic_auth("alice", ALICE_NEW_PW)) == 403
    assert whoami(client, token_header(accounts["live"])) == 200
    assert whoami(client, token_header(accounts["dead"])) == 401


def test_a_link_without_its_token_authenticates_nobody(make_app, db):
    """What a crash between storing a token's link and recording its issue leaves."""
    credentials.link_token(db, credentials.token_sha256("orphan"), "0123abcd", "w", "worker")
    assert credentials.find_token(db, credentials.token_sha256("orphan")) == "0123abcd"
    assert whoami(make_app().test_client(), token_header("orphan")) == 401


def test_init_is_idempotent_and_tolerates_concurrent_creation(db):
    errors = []

    def init():
        try:
            credentials.init_secrets_database(db)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    credentials.init_secrets_database(db)
    assert db.server.database_exists(credentials.secrets_db(db).name)


@pytest.mark.skipif(not node_available(), reason="needs node for a server of its own")
def test_only_the_apps_account_can_read_the_secrets(tmp_path, clock):
    """On a server of its own: this test makes an admin, which ends the admin party."""
    with running(tmp_path / "couch") as url:
        party = CouchServer(url)
        party.request("PUT", "_config/admins/app", body="app password")
        app_server = CouchServer(url, username="app", password="app password")
        app_server.request(
            "PUT",
            "_users/org.couchdb.user:member",
            body={"name": "member", "password": "member pw", "roles": [], "type": "user"},
        )
        db = app_server.create_database("distleech")
        init_database(db, warm=False)
        add_user(db, "root", ADMIN_PW, admin=True, actor="test", now=clock())
        security = app_server.get_json("distleech_secrets/_security")
        assert security["members"]["names"] == ["app"]
        assert credentials.get_password_hash(db, "root")
        member = CouchServer(url, username="member", password="member pw", retries=0)
        for path in ("distleech_secrets/password_hash:root", "distleech_secrets/_all_docs"):
            with pytest.raises(UnauthorizedError):
                member.get_json(path)


def test_a_deleted_secrets_database_is_made_again_on_the_next_write(make_app, db, clock):
    add_user(db, "alice", ALICE_PW, admin=True, actor="test", now=clock())
    db.server.delete_database(credentials.secrets_db(db).name)
    change_password(db, "alice", ALICE_NEW_PW, actor="test", now=clock())
    assert whoami(make_app().test_client(), basic_auth("alice", ALICE_NEW_PW)) == 200
