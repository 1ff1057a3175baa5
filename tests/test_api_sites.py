"""GET /api/sites and `distleech sites`: what an operator sees of replication.

The states come from the status the scheduler stores after each attempt
(tests/test_sites.py runs real replications); here the same documents are
read back through the API and the command, as an operator would.
"""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from conftest import basic_auth

from app.accounts.auth import add_user
from app.cli.main import main
from app.sites.replication import status_id
from app.timeutil import iso

SITES = {
    "beta": {"url": "http://127.0.0.1:9/beta_events", "direction": "both"},
    "gamma": {"url": "http://127.0.0.1:9/gamma_events", "direction": "pull"},
}


def store_status(db, now):
    db.put(
        {
            "_id": status_id("beta"),
            "flows": {
                "push": {
                    "state": "running",
                    "last_attempt": iso(now),
                    "last_success": iso(now),
                    "pending": 0,
                },
                "pull": {
                    "state": "failing",
                    "last_attempt": iso(now),
                    "last_success": iso(now - timedelta(hours=1)),
                    "failures": 4,
                    "pending": None,
                    "last_error": {
                        "code": "site_unreachable",
                        "reason": "site beta's event log …: cannot be reached (Connection refused)",
                        "at": iso(now),
                    },
                },
            },
        }
    )


def test_admins_see_every_site_with_state_pending_and_last_error(make_app, db, clock, admin_auth):
    client = make_app(site={"name": "alpha"}, sites=SITES).test_client()
    store_status(db, clock())
    body = client.get("/api/sites", headers=admin_auth).get_json()
    assert body["site"] == "alpha"
    beta, gamma = body["sites"]
    assert (beta["name"], beta["direction"], beta["state"]) == ("beta", "both", "failing")
    assert beta["url"] == SITES["beta"]["url"]
    assert beta["flows"]["push"]["state"] == "running"
    assert beta["flows"]["push"]["pending"] == 0
    assert beta["flows"]["pull"]["last_error"]["code"] == "site_unreachable"
    assert beta["flows"]["pull"]["failures"] == 4
    # configured but never tried: no scheduler has replicated with it
    assert (gamma["name"], gamma["state"], list(gamma["flows"])) == ("gamma", "stopped", ["pull"])


def test_a_status_nobody_updated_for_long_says_stopped(make_app, db, clock, admin_auth):
    client = make_app(site={"name": "alpha"}, sites=SITES).test_client()
    store_status(db, clock() - timedelta(hours=1))  # the scheduler stopped an hour ago
    beta = client.get("/api/sites", headers=admin_auth).get_json()["sites"][0]
    assert beta["state"] == "stopped"
    assert {flow["state"] for flow in beta["flows"].values()} == {"stopped"}


def test_only_admins_may_see_sites(make_app, db, clock, worker):
    client = make_app(sites=SITES).test_client()
    assert client.get("/api/sites").status_code == 401
    add_user(db, "bob", "correct horse battery", admin=False, actor="test", now=clock())
    member = client.get("/api/sites", headers=basic_auth("bob", "correct horse battery"))
    assert member.status_code == 403
    assert client.get("/api/sites", headers=worker).status_code in (401, 403)


def test_credentials_never_show(make_app, db, clock, admin_auth, monkeypatch):
    monkeypatch.setenv("DISTLEECH_SITES__BETA__USERNAME", "replicator")
    monkeypatch.setenv("DISTLEECH_SITES__BETA__PASSWORD", "hunter2-secret")
    client = make_app(sites=SITES).test_client()
    text = client.get("/api/sites", headers=admin_auth).get_data(as_text=True)
    assert "hunter2-secret" not in text and "replicator" not in text


def cli(db, *args, site_env=None):
    env = {
        "DISTLEECH_CONFIG": "/nonexistent/config.yaml",
        "DISTLEECH_COUCHDB__URL": db.server_url,
        "DISTLEECH_COUCHDB__DATABASE": db.name,
        "DISTLEECH_SITE__NAME": "alpha",
        "DISTLEECH_SITES__BETA__URL": SITES["beta"]["url"],
        **(site_env or {}),
    }
    return CliRunner().invoke(main, ["sites", *args], env=env)


def test_the_sites_command_prints_each_flow(db, clock):
    store_status(db, clock())
    # the command reads the real clock: the stored attempt is from the test's
    # clock, long ago, so the flows read as stopped, and the last error still shows
    result = cli(db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "This site: alpha"
    assert lines[1].startswith("beta  http://127.0.0.1:9/beta_events  both  stopped")
    assert lines[2].split()[:2] == ["push", "stopped"]
    assert "site_unreachable: site beta's event log" in lines[3]


def test_the_sites_command_speaks_json_like_the_api(db, clock):
    result = cli(db, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["site"] == "alpha"
    assert [site["name"] for site in body["sites"]] == ["beta"]
    assert body["sites"][0]["state"] == "stopped"


def test_without_sites_the_command_says_how_to_add_one(db):
    result = CliRunner().invoke(
        main,
        ["sites"],
        env={
            "DISTLEECH_CONFIG": "/nonexistent/config.yaml",
            "DISTLEECH_COUCHDB__URL": db.server_url,
            "DISTLEECH_COUCHDB__DATABASE": db.name,
            "DISTLEECH_SITE__NAME": "alpha",
        },
    )
    assert result.exit_code == 0, result.output
    assert "No other site is configured" in result.output
