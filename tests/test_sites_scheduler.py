"""Keeping sites replicating: backoff while a site is down, what an operator sees,
one job per site in the scheduler, and one leader per site.

Replications are real (bundled servers, conftest `make_site`); the job is
called with a fixed `now` that the test moves past each `next_attempt`.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest
import requests
from conftest import START
from factories import event_ids, get_album, make_albums
from test_sites import linked, log_url, replicate, site_settings, states

from app.config import load_settings
from app.processes import bundled
from app.sites.replication import FAILING_AFTER, read_status
from app.sites.status import lag, site_statuses, stopped_after
from app.store.catchup import catch_up_projections
from app.store.events import event_log
from app.timeutil import parse_iso
from scheduler import _follow_config, build_scheduler, sync_site_jobs
from scheduler.leader import LEADER_DOC_ID, Leader

USER, PASSWORD = "alpha", "s3cr3t-pw"
CREDENTIALS = {
    "DISTLEECH_SITES__GAMMA__USERNAME": USER,
    "DISTLEECH_SITES__GAMMA__PASSWORD": PASSWORD,
}


class RestartableServer:
    """A bundled server of a test's own, stopped and started again on the same port."""

    def __init__(self, data_dir):
        self.data_dir, self.port = data_dir, bundled.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self):
        self.process = bundled.start(self.data_dir, self.port)
        bundled.wait_until_up(self.url)

    def stop(self):
        if self.process is not None:
            bundled.stop(self.process)


@pytest.fixture
def gamma_server(tmp_path):
    server = RestartableServer(tmp_path / "gamma")
    server.start()
    # an admin account: from now on the server accepts these credentials, refuses others
    requests.put(
        f"{server.url}/_config/admins/{USER}", json=PASSWORD, timeout=10
    ).raise_for_status()
    yield server
    server.stop()


@pytest.fixture
def gamma(make_site, gamma_server):
    return make_site("gamma", gamma_server.url, username=USER, password=PASSWORD)


def alpha_with_gamma(gamma, environ=CREDENTIALS):
    return site_settings(
        "alpha",
        {"gamma": {"url": log_url(gamma)}},
        environ=environ,
        replicate_seconds=10,
        replicate_max_backoff_seconds=60,
    )


# ---------------------------------------------------------------- a site goes down


def test_a_site_that_goes_down_is_retried_ever_less_often_and_catches_up(
    alpha, gamma, gamma_server, caplog
):
    settings = alpha_with_gamma(gamma)
    make_albums(alpha, 1, now=START)
    assert states(replicate(alpha, settings, "gamma", START)) == {
        "push": "running",
        "pull": "running",
    }
    # gamma goes down; alpha goes on importing
    gamma_server.stop()
    before = len(event_ids(alpha))
    during = make_albums(alpha, 2, now=START, title="Outage {i}")
    written_meanwhile = len(event_ids(alpha)) - before

    now = START + timedelta(seconds=1)
    for failures, backoff in enumerate([20, 40, 60, 60], start=1):  # doubled, then capped
        push = replicate(alpha, settings, "gamma", now)["flows"]["push"]
        assert (push["failures"], push["last_error"]["code"]) == (failures, "site_unreachable")
        assert push["state"] == ("failing" if failures >= FAILING_AFTER else "retrying")
        assert parse_iso(push["next_attempt"]) == now + timedelta(seconds=backoff)
        assert push["pending"] == written_meanwhile  # alpha's events waiting for gamma
        # before next_attempt the job does not try at all
        early = replicate(alpha, settings, "gamma", now + timedelta(seconds=backoff - 1))
        assert early["flows"]["push"]["attempts"] == push["attempts"]
        now += timedelta(seconds=backoff)

    [site] = site_statuses(alpha, settings, now)
    assert site["state"] == "failing"
    assert site["flows"]["push"]["pending"] == written_meanwhile
    assert site["flows"]["pull"]["pending"] is None  # gamma cannot be asked
    assert PASSWORD not in json.dumps(read_status(alpha, "gamma")) + caplog.text

    # gamma comes back on the same port: the next due attempt succeeds
    gamma_server.start()
    status = replicate(alpha, settings, "gamma", now)
    assert states(status) == {"push": "running", "pull": "running"}
    assert [flow["failures"] for flow in status["flows"].values()] == [0, 0]
    assert status["flows"]["push"]["pending"] == 0
    catch_up_projections(gamma)
    assert [get_album(gamma, album)["id"] for album in during] == during


def test_wrong_credentials_are_reported_without_the_password(alpha, gamma, caplog):
    wrong = "wr0ng-s3cr3t-pw"
    environ = dict(CREDENTIALS, DISTLEECH_SITES__GAMMA__PASSWORD=wrong)
    settings = alpha_with_gamma(gamma, environ)
    make_albums(alpha, 1, now=START)
    status = replicate(alpha, settings, "gamma", START)
    assert states(status) == {"push": "retrying", "pull": "retrying"}
    codes = {flow["last_error"]["code"] for flow in status["flows"].values()}
    assert codes == {"site_unauthorized"}
    assert event_ids(gamma) == []
    shown = json.dumps(site_statuses(alpha, settings, START)) + json.dumps(status) + caplog.text
    assert wrong not in shown and PASSWORD not in shown


# ---------------------------------------------------------------- status


def test_a_site_never_replicated_or_long_left_alone_shows_stopped(alpha, beta):
    settings = site_settings(
        "alpha",
        {"beta": {"url": log_url(beta), "direction": "push"}, "delta": {"url": log_url(beta)}},
    )
    replicate(alpha, settings, "beta", START)  # delta: configured, never attempted
    later = START + timedelta(seconds=30)
    beta_site, delta_site = site_statuses(alpha, settings, later)
    assert (beta_site["name"], beta_site["state"]) == ("beta", "running")
    assert list(beta_site["flows"]) == ["push"]
    assert (delta_site["name"], delta_site["state"]) == ("delta", "stopped")
    assert {flow["state"] for flow in delta_site["flows"].values()} == {"stopped"}
    assert lag(beta_site, later)["push"] == {"pending": 0, "seconds_since_success": 30.0}
    # no scheduler has tried beta for longer than one would ever wait: stopped
    gone = START + stopped_after(settings) + timedelta(seconds=1)
    beta_site, _ = site_statuses(alpha, settings, gone)
    assert beta_site["state"] == "stopped" and beta_site["flows"]["push"]["state"] == "stopped"


def test_pending_counts_the_events_a_failed_push_left_behind(alpha, beta):
    settings = linked(beta, direction="push")
    make_albums(alpha, 2, now=START)
    assert states(replicate(alpha, settings, "beta", START)) == {"push": "running"}
    before = len(event_ids(alpha))
    make_albums(alpha, 3, now=START, title="Later {i}")
    make_albums(alpha, 1, now=START, title="Even later {i}")
    # beta's log is gone (a site being reinstalled): alpha cannot push
    beta.server.delete_database(event_log(beta).name)
    status = replicate(alpha, settings, "beta", START + timedelta(seconds=10))
    push = status["flows"]["push"]
    assert (push["state"], push["last_error"]["code"]) == ("retrying", "site_database_missing")
    assert push["pending"] == len(event_ids(alpha)) - before > 0


# ---------------------------------------------------------------- the scheduler


def job_ids(scheduler):
    return sorted(job.id for job in scheduler.get_jobs())


@pytest.fixture
def started():
    """Start schedulers paused, as run_scheduler does before it follows the config
    (no job runs by itself); shut them down after the test."""
    schedulers = []

    def start(scheduler):
        scheduler.start(paused=True)
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        scheduler.shutdown(wait=True)


def test_each_site_gets_its_replication_job_and_a_config_change_adds_and_removes_them(
    alpha, started
):
    sites = {"beta": {"url": "http://beta.example/b_events"}, "gamma": {"url": "http://g/g_events"}}
    scheduler = started(build_scheduler(site_settings("alpha", sites, replicate_seconds=7), alpha))
    others = [job for job in job_ids(scheduler) if not job.startswith("replicate_")]
    assert job_ids(scheduler) == sorted(others + ["replicate_beta", "replicate_gamma"])
    for name in ("replicate_beta", "replicate_gamma"):
        job = scheduler.get_job(name)
        assert job.trigger.interval == timedelta(seconds=7)
        assert job.coalesce and job.max_instances == 1
    # beta is dropped from the config, delta added
    sites = {"gamma": sites["gamma"], "delta": {"url": "http://d/d_events"}}
    leader = Leader(alpha, lease_seconds=30)
    sync_site_jobs(scheduler, site_settings("alpha", sites), alpha, leader, lambda: START)
    assert job_ids(scheduler) == sorted(others + ["replicate_delta", "replicate_gamma"])


def test_the_scheduler_follows_the_config_file_and_survives_a_broken_one(alpha, started, tmp_path):
    """What `distleech scheduler` does at every poll: read config.yaml again."""
    config = tmp_path / "config.yaml"
    config.write_text("site:\n  name: alpha\n", encoding="utf-8")

    def reload():
        return load_settings(config_path=config, environ={})

    settings = reload()
    scheduler = started(build_scheduler(settings, alpha))
    leader = Leader(alpha, lease_seconds=30)
    config.write_text(
        "site:\n  name: alpha\nsites:\n  beta:\n    url: http://beta.example/b_events\n",
        encoding="utf-8",
    )
    settings = _follow_config(scheduler, settings, reload, alpha, leader)
    assert "replicate_beta" in job_ids(scheduler) and list(settings.sites) == ["beta"]
    for broken in (b"sites: [\n", "site:\n  name: caf\xe9\n".encode("latin-1")):
        config.write_bytes(broken)  # invalid YAML; then not UTF-8 at all
        assert _follow_config(scheduler, settings, reload, alpha, leader) is settings
        assert "replicate_beta" in job_ids(scheduler)  # the last good config stays
    config.write_text("site:\n  name: alpha\n", encoding="utf-8")
    _follow_config(scheduler, settings, reload, alpha, leader)
    assert not [job for job in job_ids(scheduler) if job.startswith("replicate_")]


def test_a_corrected_site_url_takes_effect_without_a_restart(alpha, beta, clock, started):
    leader = Leader(alpha, lease_seconds=30)
    assert leader.acquire(clock())
    wrong = site_settings("alpha", {"beta": {"url": log_url(beta) + "_typo_events"}})
    scheduler = started(build_scheduler(wrong, alpha, leader=leader, clock=clock))
    make_albums(alpha, 1, now=clock())

    def run_job():
        job = scheduler.get_job("replicate_beta")
        return job.func(*job.args)  # as the scheduler runs it: only while leading

    assert run_job()["flows"]["push"]["last_error"]["code"] == "site_database_missing"
    sync_site_jobs(scheduler, linked(beta), alpha, leader, clock)
    # at once: the wrong address's backoff does not hold back the corrected one
    assert states(run_job()) == {"push": "running", "pull": "running"}
    assert event_ids(beta) == event_ids(alpha)


def test_each_site_keeps_its_own_leader_through_replication(alpha, beta):
    leaders = {
        "alpha": Leader(alpha, lease_seconds=30, holder="alpha-scheduler"),
        "beta": Leader(beta, lease_seconds=30, holder="beta-scheduler"),
    }
    assert all(leader.acquire(START) for leader in leaders.values())
    make_albums(alpha, 1, now=START)
    make_albums(beta, 1, now=START, title="Beta {i}")
    assert set(states(replicate(alpha, linked(beta), "beta", START)).values()) == {"running"}
    for db in (alpha, beta):
        catch_up_projections(db)
    # each lease document still names its own site's scheduler, which renews it
    later = START + timedelta(seconds=10)
    for (name, leader), db in zip(leaders.items(), (alpha, beta), strict=True):
        assert db.get(LEADER_DOC_ID)["holder"] == f"{name}-scheduler"
        assert leader.acquire(later) and leader.holds(later)
    # and a second copy at either site still has to wait
    for db in (alpha, beta):
        assert not Leader(db, lease_seconds=30, holder="intruder").acquire(later)
