"""Sites replicate their event logs: the `sites:` config, what arrives, what never leaves.

Every site here is its own read model and event log on its own bundled server
(conftest `make_site`, `second_couch_url`, `third_couch_url`), linked through
the replication job itself (app/sites/replication.py) called with a fixed
`now`; each site's projector then folds what arrived. Failures, backoff, the
status an operator sees and the scheduler's jobs are in test_sites_scheduler.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import START
from factories import event_ids, get_album, make_albums, read_model

from app.accounts.auth import add_user, change_password, issue_token
from app.accounts.credentials import list_secret_documents, secrets_db
from app.config import ConfigError, load_settings
from app.queues.albums import lease_albums
from app.queues.leasing import QueueLeaser
from app.sites import accounts
from app.sites.links import MASK, Endpoint, local_endpoint, redact, site_links
from app.sites.replication import count_pending, read_status, replicate_site, status_id
from app.store.catchup import LOG_CHECKPOINT_ID, catch_up_projections
from app.store.couch import CouchServer, CouchUnavailableError
from app.store.events import event_log
from app.store.projections import rebuild_projections
from app.tracker.peersdb import init_peers_database, swarm_doc_id
from scheduler import jobs
from scheduler.leader import LEADER_DOC_ID, Leader

NO_FILE = Path("/nonexistent/config.yaml")
LOG_DESIGN = "_design/log"


def site_settings(own, sites, *, environ=None, **scheduler):
    """The settings of site `own`, linked to `sites` ({name: link}), with no config file."""
    return load_settings(
        {"site": {"name": own}, "sites": sites, "scheduler": scheduler},
        config_path=NO_FILE,
        environ=environ or {},
    )


def log_url(db):
    """What another site configures as this site's `url`: its event log."""
    return f"{db.server_url}/{event_log(db).name}"


def replicate(db, settings, name, now):
    """Run the replication job of one configured site at `now`; return its stored status."""
    [link] = [link for link in site_links(settings) if link.name == name]
    return replicate_site(db, link, settings, now)


def states(status):
    return {flow: state["state"] for flow, state in status["flows"].items()}


def ids_in(database):
    rows = database.server.get_json(f"{database.path}/_all_docs")["rows"]
    return {row["id"]: row["value"]["rev"] for row in rows}


def linked(beta, **link):
    """Alpha's settings with beta as its one other site (both ways unless told)."""
    return site_settings("alpha", {"beta": {"url": log_url(beta), **link}})


# ---------------------------------------------------------------- config


def test_sites_come_from_the_file_and_their_credentials_from_the_environment(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "site:\n  name: alpha\nsites:\n"
        "  beta:\n    url: https://beta.example:6984/distleech_events\n    direction: push\n"
        "  gamma:\n    url: http://gamma.example/distleech_events/\n",
        encoding="utf-8",
    )
    environ = {
        "DISTLEECH_SITES__BETA__USERNAME": "alpha",
        "DISTLEECH_SITES__BETA__PASSWORD": "1234",
        "DISTLEECH_SITES__GAMMA__PASSWORD": "null",
    }
    settings = load_settings(config_path=path, environ=environ)
    beta, gamma = settings.sites["beta"], settings.sites["gamma"]
    assert (beta.url, beta.direction) == ("https://beta.example:6984/distleech_events", "push")
    assert (beta.username, beta.password) == ("alpha", "1234")  # strings, not 1234 / None
    assert (gamma.direction, gamma.username, gamma.password) == ("both", "", "null")
    links = {link.name: link for link in site_links(settings)}
    assert links["beta"].flows == ("push",) and links["gamma"].flows == ("push", "pull")
    assert links["gamma"].remote.url == "http://gamma.example/distleech_events"


def test_a_site_may_come_from_the_environment_alone():
    environ = {
        "DISTLEECH_SITES__DELTA__URL": "http://delta.example:5984/distleech_events",
        "DISTLEECH_SITES__DELTA__DIRECTION": "pull",
        "DISTLEECH_SITES__DELTA__PASSWORD": "true",
    }
    delta = load_settings(config_path=NO_FILE, environ=environ).sites["delta"]
    assert (delta.url, delta.direction, delta.password) == (
        "http://delta.example:5984/distleech_events",
        "pull",
        "true",
    )


@pytest.mark.parametrize("key", ["username", "password"])
def test_site_credentials_in_the_file_are_refused(tmp_path, key):
    path = tmp_path / "config.yaml"
    path.write_text(
        f"sites:\n  beta:\n    url: http://beta.example/distleech_events\n    {key}: hunter22\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=f"sites.beta.{key}"):
        load_settings(config_path=path, environ={})


URL = "http://beta.example:5984/distleech_events"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"sites": {"beta": {"url": "http://alpha:pw@beta.example/distleech_events"}}}, "url"),
        ({"sites": {"beta": {"url": "http://alpha@beta.example/distleech_events"}}}, "url"),
        ({"sites": {"beta": {"url": "http://beta.example:5984"}}}, "sites.beta.url"),
        ({"sites": {"beta": {"url": "http://beta.example:5984/"}}}, "sites.beta.url"),
        ({"sites": {"beta": {"url": "beta.example:5984/distleech_events"}}}, "sites.beta.url"),
        ({"sites": {"beta": {"url": "ftp://beta.example/distleech_events"}}}, "sites.beta.url"),
        ({"sites": {"beta": {"url": URL, "direction": "sideways"}}}, "sites.beta.direction"),
        ({"sites": {"beta": {"url": URL, "bogus": 1}}}, "sites.beta"),
        ({"sites": {"beta": {"direction": "push"}}}, "sites.beta: 'url'"),
        ({"sites": {"beta": URL}}, "sites.beta"),
        ({"sites": {"Beta": {"url": URL}}}, "sites: 'Beta'"),
        ({"sites": {"-beta": {"url": URL}}}, "sites: '-beta'"),
        ({"sites": {"b" * 64: {"url": URL}}}, "sites: 'bbb"),
        ({"site": {"name": "alpha"}, "sites": {"alpha": {"url": URL}}}, "sites.alpha"),
        ({"site": {"name": "Alpha"}, "sites": {"alpha": {"url": URL}}}, "sites.alpha"),
    ],
)
def test_a_bad_site_fails_naming_its_key(config, key):
    with pytest.raises(ConfigError) as error:
        load_settings(config, config_path=NO_FILE, environ={})
    assert key in str(error.value)


def test_a_refused_url_with_a_password_in_it_does_not_show_the_password():
    url = "http://alpha:s3cr3t-pw@beta.example/distleech_events"
    with pytest.raises(ConfigError, match="sites.beta.url") as error:
        load_settings({"sites": {"beta": {"url": url}}}, config_path=NO_FILE, environ={})
    assert "s3cr3t-pw" not in str(error.value)


def test_credentials_reach_replication_quoted_and_are_masked_everywhere_else():
    remote = Endpoint("http://beta.example:5984/distleech_events", "al pha", "p@ss:w/rd%")
    assert remote.with_credentials() == (
        "http://al%20pha:p%40ss%3Aw%2Frd%25@beta.example:5984/distleech_events"
    )
    said = f"cannot replicate {remote.with_credentials()} (password p@ss:w/rd%)"
    assert redact(said, [remote]) == (
        f"cannot replicate http://al%20pha:{MASK}@beta.example:5984/distleech_events "
        f"(password {MASK})"
    )


# ---------------------------------------------------------------- what arrives


def test_two_sites_on_two_servers_end_with_the_same_albums(alpha, beta):
    # each site imports its own albums
    at_alpha = make_albums(alpha, 3, now=START, artist="Cockburn, Bruce")
    at_beta = make_albums(beta, 2, now=START, artist="Mitchell, Joni")
    from_alpha, from_beta = event_ids(alpha), event_ids(beta)
    # alpha's scheduler replicates both ways, then each site's projector runs
    status = replicate(alpha, linked(beta), "beta", START)
    assert states(status) == {"push": "running", "pull": "running"}
    assert status["flows"]["push"]["events_written"] == len(from_alpha)
    assert status["flows"]["pull"]["events_written"] == len(from_beta)
    for db in (alpha, beta):
        catch_up_projections(db)
    # every album at both sites, the same read model at both, each equal to its rebuild
    for db in (alpha, beta):
        assert [get_album(db, album)["id"] for album in at_alpha + at_beta] == at_alpha + at_beta
        assert rebuild_projections(db, check_only=True).differing == []
    assert event_ids(alpha) == event_ids(beta)
    assert read_model(alpha) == read_model(beta)
    # an event keeps the site that wrote it
    for db in (alpha, beta):
        log = event_log(db)
        assert {log.get(event)["site"] for event in from_alpha} == {"alpha"}
        assert {log.get(event)["site"] for event in from_beta} == {"beta"}


def test_only_events_leave_a_site(alpha, beta):
    # alpha holds a bit of everything: albums, an account, a token, its scheduler's
    # lease, a stats snapshot, its projector's checkpoint, a swarm, a design doc of its own
    make_albums(alpha, 2, now=START)
    add_user(alpha, "root", "correct horse battery", admin=True, actor="test", now=START)
    issue_token(alpha, "laptop", "worker", actor="test", now=START)
    assert Leader(alpha, lease_seconds=30, holder="alpha-scheduler").acquire(START)
    jobs.snapshot_stats(alpha, START)
    catch_up_projections(alpha)
    peers = alpha.companion("peers")
    init_peers_database(peers)
    peers.put({"_id": swarm_doc_id("ab" * 20), "type": "swarm", "peers": {}})
    event_log(alpha).put({"_id": "_design/alpha-only", "language": "javascript"})
    beta_read_model, beta_log_design = ids_in(beta), event_log(beta).get(LOG_DESIGN)["_rev"]

    status = replicate(alpha, linked(beta), "beta", START)
    assert states(status) == {"push": "running", "pull": "running"}

    # beta's read model is beta's own: nothing of alpha's arrived in it
    assert ids_in(beta) == beta_read_model
    for local in (status_id("beta"), status_id("alpha"), "_local/stats-snapshot"):
        assert beta.get_or_none(local) is None
    assert beta.get_or_none(LOG_CHECKPOINT_ID) is None  # beta's projector never ran
    # its log got events and nothing else: alpha's design documents stayed at alpha
    beta_log = ids_in(event_log(beta))
    assert beta_log.pop(LOG_DESIGN) == beta_log_design
    assert beta_log and all(doc_id.startswith("ev:") for doc_id in beta_log)
    assert set(beta_log) == set(event_ids(alpha))  # both logs hold every event now
    # swarms never leave; credentials travel as the current documents only
    assert not beta.server.database_exists(beta.companion("peers").name)
    alpha_secrets = {doc["_id"] for doc in list_secret_documents(alpha)}
    assert alpha_secrets and {doc["_id"] for doc in list_secret_documents(beta)} == alpha_secrets
    # once beta's projector has run, it holds alpha's projections but not alpha's lease
    catch_up_projections(beta)
    assert beta.get_or_none(LEADER_DOC_ID) is None
    assert read_model(beta) == read_model(alpha, leave_out={LEADER_DOC_ID})


def test_a_missing_log_is_reported_and_never_created(alpha, second_couch_url):
    name = f"test_nowhere_{uuid.uuid4().hex[:12]}"
    settings = site_settings("alpha", {"beta": {"url": f"{second_couch_url}/{name}_events"}})
    status = replicate(alpha, settings, "beta", START)
    assert states(status) == {"push": "retrying", "pull": "retrying"}
    codes = {flow["last_error"]["code"] for flow in status["flows"].values()}
    assert codes == {"site_database_missing"}
    server = CouchServer(second_couch_url)
    for database in (f"{name}_events", f"{name}_secrets"):
        assert not server.database_exists(database)
    assert read_status(alpha, "beta") == status  # what the status page reads


def test_a_site_added_later_receives_the_whole_history(alpha, beta, make_site, third_couch_url):
    settings, now = linked(beta), START
    for round_ in range(3):
        # both sites import, replicate, and beta's worker leases what is there
        make_albums(alpha, 2, now=now, title=f"Alpha {round_}.{{i}}")
        make_albums(beta, 2, now=now, title=f"Beta {round_}.{{i}}")
        assert set(states(replicate(alpha, settings, "beta", now)).values()) == {"running"}
        for db in (alpha, beta):
            catch_up_projections(db)
        assert lease_albums(QueueLeaser(beta), "worker-b", 1, now, 60)
        now += timedelta(minutes=1)
    replicate(alpha, settings, "beta", now)  # beta's last lease reaches alpha
    catch_up_projections(alpha)

    # gamma, on a third server, is configured now and pulls from alpha only
    gamma = make_site("gamma", third_couch_url)
    joined = site_settings("gamma", {"alpha": {"url": log_url(alpha), "direction": "pull"}})
    assert states(replicate(gamma, joined, "alpha", now)) == {"pull": "running"}
    catch_up_projections(gamma)
    assert event_ids(gamma) == event_ids(alpha) == event_ids(beta)
    assert {event_log(gamma).get(e)["site"] for e in event_ids(gamma)} == {"alpha", "beta"}
    assert read_model(gamma) == read_model(alpha)
    assert rebuild_projections(gamma, check_only=True).differing == []


def test_pending_leaves_out_what_came_from_the_site_itself(alpha, beta):
    """Events pulled from beta are in alpha's log after the push checkpoint, but they
    need not go back to beta: only alpha's own count as pending for beta."""
    make_albums(beta, 2, now=START, title="Beta {i}")
    status = replicate(alpha, linked(beta), "beta", START)
    checkpoint = status["flows"]["push"]["checkpoint"]
    local = local_endpoint(alpha)
    assert count_pending(local, checkpoint) == 1  # beta's import arrived after the push
    assert count_pending(local, checkpoint, skip_site="beta") == 0
    make_albums(alpha, 1, now=START)
    assert count_pending(local, checkpoint, skip_site="beta") == 1


def test_events_flow_even_when_the_other_sites_secrets_database_is_missing(alpha, beta):
    """The operator is told which database is missing; the events already arrived."""
    beta.server.delete_database(f"{beta.name}_secrets")
    make_albums(alpha, 2, now=START)
    push = replicate(alpha, linked(beta), "beta", START)["flows"]["push"]
    assert push["state"] == "retrying"
    assert push["last_error"]["code"] == "site_database_missing"
    assert f"{beta.name}_secrets" in push["last_error"]["reason"]
    assert "secrets database" in push["last_error"]["reason"]
    assert event_ids(beta) == event_ids(alpha)  # the events went through
    assert push["events_written"] == 1 and push["pending"] == 0
    assert not beta.server.database_exists(f"{beta.name}_secrets")  # never created


def test_events_the_other_sites_validator_refuses_are_reported(alpha, beta):
    """A site whose log refuses what arrives (its validator, its rights) is not
    "running": the flow says how many events were refused."""
    log = event_log(beta)
    design = log.get(LOG_DESIGN)
    design["validate_doc_update"] = (
        "function (newDoc) { if (newDoc._id.indexOf('_design/') !== 0) "
        "{ throw({forbidden: 'closed for maintenance'}); } }"
    )
    log.put(design)
    make_albums(alpha, 2, now=START)
    push = replicate(alpha, linked(beta, direction="push"), "beta", START)["flows"]["push"]
    assert push["state"] == "retrying"
    assert push["last_error"]["code"] == "replication_refused"
    assert "1 events were refused" in push["last_error"]["reason"]
    assert not [i for i in event_ids(beta) if i in event_ids(alpha)]


def test_a_secrets_conflict_left_unresolved_is_resolved_at_the_next_run(alpha, beta, monkeypatch):
    """Resolution and compaction that fail once are tried again, never forgotten,
    even when nothing new arrives (a push-only link)."""
    add_user(alpha, "root", "correct horse battery", admin=True, actor="t", now=START)
    link = linked(beta, direction="push")
    replicate(alpha, link, "beta", START)
    catch_up_projections(beta)  # beta knows the user: it can change its password too
    change_password(alpha, "root", "alpha's new password", actor="a", now=START)
    change_password(beta, "root", "beta's new password", actor="b", now=START)
    real = accounts.resolve_conflicts
    calls = []

    def failing_once(sdb, since):
        calls.append(since)
        if len(calls) == 1:
            raise CouchUnavailableError(503, "unavailable", "injected")
        return real(sdb, since)

    monkeypatch.setattr(accounts, "resolve_conflicts", failing_once)
    first = replicate(alpha, link, "beta", START)["flows"]["push"]
    assert first["last_error"]["code"] == "accounts_replication_failed"
    later = START + timedelta(minutes=10)
    second = replicate(alpha, link, "beta", later)["flows"]["push"]
    assert second["state"] == "running"
    doc = secrets_db(beta).get("password_hash:root", conflicts=True)
    assert doc.get("_conflicts", []) == []
