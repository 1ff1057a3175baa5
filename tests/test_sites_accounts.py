"""One account works at every site: users and tokens are events, their secrets
replicate beside the log (app/sites/accounts.py), and a replaced or losing
hash is compacted away at every site."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from conftest import START, basic_auth, token_header
from test_convergence import Sites

from app import create_app
from app.accounts.auth import add_user, change_password, issue_token, revoke_token
from app.accounts.credentials import PASSWORD_PREFIX, secrets_db
from app.config import ConfigError, load_settings

PASSWORD, NEW_PASSWORD = "correct horse battery", "staple battery horse"


@pytest.fixture
def sites(couch_server):
    pair = Sites(couch_server)
    yield pair
    pair.drop()


def client_at(db, site):
    """A fresh app at that site (no credential cache carried over)."""
    config = {
        "couchdb": {"url": db.server_url, "database": db.name},
        "site": {"name": site},
        "scheduler": {"enabled": False},
    }
    return create_app(config).test_client()


def status_with(client, headers):
    return client.get("/api/sites", headers=headers).status_code


def test_an_admin_added_at_one_site_logs_in_at_the_other(sites):
    add_user(sites.alpha, "root", PASSWORD, admin=True, actor="test", now=START)
    assert status_with(client_at(sites.beta, "beta"), basic_auth("root", PASSWORD)) == 401
    sites.meet()
    assert status_with(client_at(sites.beta, "beta"), basic_auth("root", PASSWORD)) == 200


def test_a_worker_token_works_everywhere_and_a_revocation_reaches_every_site(sites):
    token = issue_token(sites.alpha, "laptop", "worker", actor="test", now=START)
    sites.meet()
    beta = client_at(sites.beta, "beta")
    assert beta.get("/metadata/1", headers=token_header(token)).status_code == 200
    revoke_token(sites.beta, "laptop", actor="test", now=START + timedelta(minutes=1))
    sites.meet()
    alpha = client_at(sites.alpha, "alpha")
    assert alpha.get("/metadata/1", headers=token_header(token)).status_code == 401


def hash_revisions(db, name):
    """Every revision of the user's password document that still has a body."""
    sdb = secrets_db(db)
    doc = sdb.get(PASSWORD_PREFIX + name, revs_info=True, conflicts=True)
    return [info["rev"] for info in doc["_revs_info"] if info["status"] == "available"], doc


def test_a_password_changed_at_one_site_changes_everywhere_and_the_old_hash_is_gone(sites):
    add_user(sites.alpha, "root", PASSWORD, admin=True, actor="test", now=START)
    sites.meet()
    change_password(sites.alpha, "root", NEW_PASSWORD, actor="test", now=START)
    sites.meet()
    beta = client_at(sites.beta, "beta")
    assert status_with(beta, basic_auth("root", PASSWORD)) == 401
    assert status_with(beta, basic_auth("root", NEW_PASSWORD)) == 200
    available, _ = hash_revisions(sites.beta, "root")
    assert len(available) == 1  # the replaced hash was compacted away at beta too


def test_a_password_changed_at_both_sites_apart_ends_the_same_everywhere(sites):
    add_user(sites.alpha, "root", PASSWORD, admin=True, actor="test", now=START)
    sites.meet()
    change_password(sites.alpha, "root", "alpha's new password", actor="a", now=START)
    change_password(sites.beta, "root", "beta's new password", actor="b", now=START)
    sites.meet()
    sites.meet()  # the resolution made at each target reaches the other side
    winners = set()
    for db, site in ((sites.alpha, "alpha"), (sites.beta, "beta")):
        available, doc = hash_revisions(db, "root")
        assert doc.get("_conflicts", []) == [] and len(available) == 1  # no old hash left
        client = client_at(db, site)
        accepted = {
            p
            for p in ("alpha's new password", "beta's new password", PASSWORD)
            if status_with(client, basic_auth("root", p)) == 200
        }
        assert len(accepted) == 1
        winners |= accepted
    assert len(winners) == 1  # the same password at both sites


def test_without_accounts_a_site_keeps_its_secrets(couch_server):
    pair = Sites(couch_server, accounts=False)
    try:
        add_user(pair.alpha, "root", PASSWORD, admin=True, actor="test", now=START)
        pair.meet()
        assert status_with(client_at(pair.beta, "beta"), basic_auth("root", PASSWORD)) == 401
        rows = secrets_db(pair.beta).server.get_json(f"{secrets_db(pair.beta).path}/_all_docs")
        assert rows["rows"] == []
    finally:
        pair.drop()


def test_a_log_url_without_events_suffix_needs_the_secrets_url():
    def settings(**link):
        return load_settings(
            {"sites": {"beta": {"url": "http://beta.example:5984/archive_log", **link}}},
            config_path=Path("/nonexistent/config.yaml"),
            environ={},
        )

    with pytest.raises(ConfigError, match="sites.beta.accounts_url"):
        settings()
    assert settings(accounts=False).sites["beta"].accounts is False
    url = "http://beta.example:5984/archive_secrets"
    assert settings(accounts_url=url).sites["beta"].accounts_url == url
