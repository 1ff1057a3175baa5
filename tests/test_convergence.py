"""Two sites that wrote the same aggregates while apart converge, and keep every fact.

Each site is its own database set (read model + event log) with its own
site name; they meet through the real replication job (app/sites), and each
site's projector folds what arrived. The domain decides what two sites'
concurrent commands mean (README "Several sites").
"""

from __future__ import annotations

import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import START
from factories import album_id_for, get_album, read_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rebuild_property import Run
from test_rebuild_property import commands as single_site_commands

from app.config import load_settings
from app.queues.albums import import_albums, lease_albums, submit_metadata
from app.queues.archive import Completion, complete_task, queue_url
from app.queues.archive import lease_next as archive_lease
from app.queues.archive import task_doc_id as archive_doc_id
from app.queues.downloads import TorrentRef, task_doc_id
from app.queues.leasing import QueueLeaser, reap_expired_leases
from app.sites.links import site_links, site_share
from app.sites.replication import replicate_site
from app.store.catchup import catch_up_projections
from app.store.couch import Database
from app.store.events import event_log
from app.store.projections import rebuild_projections
from app.store.setup import init_database
from app.tracker.members import get_tracker_user, register_user, update_user

PTH = "passtheheadphones.me"


class Sites:
    """Site alpha and site beta on one server, linked both ways through alpha's scheduler."""

    def __init__(self, server, *, accounts: bool = True) -> None:
        tag = uuid.uuid4().hex[:10]
        self.server = server
        self.alpha = Database(server, f"test_alpha_{tag}", site="alpha")
        self.beta = Database(server, f"test_beta_{tag}", site="beta")
        for db in (self.alpha, self.beta):
            server.create_database(db.name)
            init_database(db, warm=False)
        self.settings = load_settings(
            {
                "site": {"name": "alpha"},
                "sites": {
                    "beta": {"url": f"{server.url}/{self.beta.name}_events", "accounts": accounts}
                },
            },
            config_path=Path("/nonexistent/config.yaml"),
            environ={},
        )

    def meet(self, now=START) -> None:
        """Replication both ways, then both projectors catch up."""
        [link] = site_links(self.settings)
        status = replicate_site(self.alpha, link, self.settings, now)
        assert {flow["state"] for flow in status["flows"].values()} == {"running"}, status
        for db in (self.alpha, self.beta):
            catch_up_projections(db)

    def drop(self) -> None:
        for db in (self.alpha, self.beta):
            for name in (
                db.name,
                *(f"{db.name}_{role}" for role in ("events", "secrets", "peers")),
            ):
                if self.server.database_exists(name):
                    self.server.delete_database(name)


@pytest.fixture
def sites(couch_server):
    pair = Sites(couch_server)
    yield pair
    pair.drop()


def event_ids_of(db):
    rows = event_log(db).server.get_json(f"{event_log(db).path}/_all_docs")["rows"]
    return {row["id"] for row in rows if row["id"].startswith("ev:")}


def assert_converged(sites):
    """Same events at both, same read model at both, each equal to its rebuild."""
    assert event_ids_of(sites.alpha) == event_ids_of(sites.beta)
    assert read_model(sites.alpha) == read_model(sites.beta)
    for db in (sites.alpha, sites.beta):
        assert rebuild_projections(db, check_only=True).differing == []


def imported(db, titles, now):
    rows = [(line, "Cockburn, Bruce", title) for line, title in enumerate(titles, start=2)]
    return import_albums(db, rows, actor="op", now=now)


def test_an_album_leased_at_two_sites_keeps_both_holders(sites):
    imported(sites.alpha, ["Humans"], START)
    sites.meet()
    album = album_id_for("Cockburn, Bruce", "Humans")
    # apart: each site hands the same album to its own worker
    [at_alpha] = lease_albums(QueueLeaser(sites.alpha), "worker-a", 1, START, 60)
    later = START + timedelta(seconds=5)
    [at_beta] = lease_albums(QueueLeaser(sites.beta), "worker-b", 1, later, 90)
    assert at_alpha["id"] == at_beta["id"] == album
    sites.meet()
    assert_converged(sites)
    lease = get_album(sites.beta, album)["lease"]
    assert lease["holder"] == "worker-a"  # the earlier lease comes first at every site
    assert [other["holder"] for other in lease["also_held_by"]] == ["worker-b"]
    assert lease["expires_at"] == "2026-01-01T13:30:05.000000Z"  # the later expiry of the two
    assert get_album(sites.alpha, album)["state"] == "leased"


def test_the_first_result_fills_an_album_and_the_other_is_still_recorded(sites):
    imported(sites.alpha, ["Humans"], START)
    sites.meet()
    album = album_id_for("Cockburn, Bruce", "Humans")
    first, second = TorrentRef(PTH, 101), TorrentRef(PTH, 202)
    submit_metadata(sites.alpha, {album: [first]}, holder="worker-a", now=START, retry_minutes=60)
    later = START + timedelta(minutes=1)
    submit_metadata(sites.beta, {album: [second]}, holder="worker-b", now=later, retry_minutes=60)
    sites.meet(later)
    assert_converged(sites)
    doc = get_album(sites.alpha, album)
    assert doc["state"] == "found"
    assert doc["found_at"] == "2026-01-01T12:00:00.000000Z"  # the first result filled it
    assert [t["torrentId"] for t in doc["torrents"]] == [101, 202]  # the other is kept
    for ref in (first, second):  # each site's download task reached both
        assert sites.beta.get(task_doc_id(ref.host, ref.torrent_id))["state"] == "ready"


def test_an_inventory_imported_at_both_sites_adds_each_album_once(sites):
    titles = ["Humans", "Dart to the Heart", "Inner City Front"]
    imported(sites.alpha, titles, START)
    imported(sites.beta, titles + ["Stealing Fire"], START + timedelta(minutes=5))
    sites.meet()
    assert_converged(sites)
    albums = {k: v for k, v in read_model(sites.alpha).items() if k.startswith("album:")}
    assert len(albums) == 4
    humans = albums[f"album:{album_id_for('Cockburn, Bruce', 'Humans')}"]
    assert humans["imported_at"] == "2026-01-01T12:00:00.000000Z"  # as the first import had it
    assert len(event_ids_of(sites.alpha)) == 2  # both imports are kept as facts


def test_a_member_changed_at_two_sites_ends_with_both_changes(sites):
    register_user(sites.alpha, 7, name="alice", actor="op", now=START)
    sites.meet()
    later = START + timedelta(minutes=1)
    update_user(sites.alpha, 7, can_leech=False, actor="op-a", now=START)
    update_user(sites.beta, 7, name="alice2", actor="op-b", now=later)
    sites.meet(later)
    assert_converged(sites)
    for db in (sites.alpha, sites.beta):
        user = get_tracker_user(db, 7)
        assert (user["name"], user["can_leech"]) == ("alice2", False)


def site_settings(own, other):
    return load_settings(
        {"site": {"name": own}, "sites": {other: {"url": f"http://127.0.0.1:9/{other}_events"}}},
        config_path=Path("/nonexistent/config.yaml"),
        environ={},
    )


def test_each_site_computes_its_own_share_of_the_queues():
    assert site_share(site_settings("alpha", "beta")) == (0, 2)
    assert site_share(site_settings("beta", "alpha")) == (1, 2)
    off = load_settings(
        {"site": {"name": "beta"}, "leases": {"site_shares": False}},
        config_path=Path("/nonexistent/config.yaml"),
        environ={},
    )
    assert site_share(off) == (0, 1)


@pytest.mark.parametrize("shared", [True, False], ids=["shares", "no-shares"])
def test_sites_apart_lease_from_their_own_share_first(sites, shared):
    """Without shares both sites hand out the head of the same queue while apart;
    with them each takes its own share, and the others' only when its own is empty."""
    titles = [f"Album {i}" for i in range(24)]
    imported(sites.alpha, titles, START)
    sites.meet()
    counts = 2 if shared else 1
    alpha = QueueLeaser(sites.alpha, site_share=0, site_shares=counts)
    beta = QueueLeaser(sites.beta, site_share=1 % counts, site_shares=counts)
    at_alpha = {a["id"] for a in lease_albums(alpha, "worker-a", 5, START, 60)}
    at_beta = {a["id"] for a in lease_albums(beta, "worker-b", 5, START, 60)}
    double_leases = at_alpha & at_beta
    if not shared:
        assert len(double_leases) == 5  # the same five, leased twice
        return
    assert double_leases == set()
    in_alpha_share = {
        album_id_for("Cockburn, Bruce", t)
        for t in titles
        if zlib.adler32(f"album:{album_id_for('Cockburn, Bruce', t)}".encode()) % 2 == 0
    }
    assert at_alpha <= in_alpha_share and not at_beta & in_alpha_share
    # alpha empties its own share, then goes on with beta's (apart, it cannot know
    # which of those beta leased: only then do double leases happen)
    rest = [a["id"] for a in lease_albums(alpha, "worker-a", 24, START, 60)]
    own_left = len(in_alpha_share) - 5
    assert set(rest[:own_left]) == in_alpha_share - at_alpha
    everything = {album_id_for("Cockburn, Bruce", t) for t in titles}
    assert set(rest[own_left:]) == everything - in_alpha_share


def test_one_holders_lease_ending_leaves_the_other_holding(sites):
    """Alpha's short lease expires (alpha's reaper, apart); beta's long one runs on:
    after they meet the album is still held by beta's worker, and no site hands
    it out again until that lease ends too."""
    imported(sites.alpha, ["Humans"], START)
    sites.meet()
    album = album_id_for("Cockburn, Bruce", "Humans")
    lease_albums(QueueLeaser(sites.alpha), "worker-a", 1, START, 1)
    lease_albums(QueueLeaser(sites.beta), "worker-b", 1, START + timedelta(seconds=5), 60)
    assert reap_expired_leases(sites.alpha, START + timedelta(minutes=2)) == 1
    sites.meet()
    assert_converged(sites)
    lease = get_album(sites.beta, album)["lease"]
    assert (lease["holder"], lease.get("also_held_by")) == ("worker-b", None)
    later = START + timedelta(minutes=5)
    assert lease_albums(QueueLeaser(sites.beta), "worker-c", 1, later, 60) == []
    assert lease_albums(QueueLeaser(sites.alpha), "worker-c", 1, later, 60) == []
    # and when beta's lease has run out, the reaper returns it: every holder gone
    assert reap_expired_leases(sites.beta, START + timedelta(hours=2)) == 1
    assert get_album(sites.beta, album)["state"] == "ready"


def test_a_found_album_stays_found_whatever_the_other_site_did_meanwhile(sites):
    """Beta went further while apart (not found, then leased again): its later lease
    must not take back alpha's result."""
    imported(sites.alpha, ["Humans"], START)
    sites.meet()
    album = album_id_for("Cockburn, Bruce", "Humans")
    lease_albums(QueueLeaser(sites.alpha), "worker-a", 1, START, 60)
    submit_metadata(
        sites.alpha, {album: [TorrentRef(PTH, 7)]}, holder="worker-a", now=START, retry_minutes=60
    )
    beta = QueueLeaser(sites.beta)
    lease_albums(beta, "worker-b", 1, START, 60)
    submit_metadata(sites.beta, {album: []}, holder="worker-b", now=START, retry_minutes=1)
    later = START + timedelta(minutes=2)
    assert [a["id"] for a in lease_albums(beta, "worker-c", 1, later, 60)] == [album]
    sites.meet(later)
    assert_converged(sites)
    for db in (sites.alpha, sites.beta):
        doc = get_album(db, album)
        assert (doc["state"], doc["lease"]) == ("found", None)
    far = START + timedelta(hours=3)
    assert reap_expired_leases(sites.alpha, far) == 0  # nothing to return to the queue
    assert lease_albums(QueueLeaser(sites.alpha), "worker-d", 1, far, 60) == []


def test_a_url_archived_at_one_site_stays_done_when_the_other_reports_a_failure(sites):
    url = "https://example.org/page"
    queued = queue_url(sites.alpha, url, 0, actor="queuer", now=START).task
    sites.meet()
    task_id = queued["id"]
    for db, holder in ((sites.alpha, "worker-a"), (sites.beta, "worker-b")):
        assert archive_lease(QueueLeaser(db), holder, START, 60) is not None
    done = Completion(task_id, "done", "worker-a")
    complete_task(sites.alpha, done, now=START, max_attempts=3)
    failed = Completion(task_id, "failed", "worker-b", reason="timeout")
    complete_task(sites.beta, failed, now=START + timedelta(seconds=1), max_attempts=3)
    sites.meet()
    assert_converged(sites)
    assert sites.beta.get(archive_doc_id(task_id))["state"] == "done"


# ---------------------------------------------------------------- property


site_commands = st.one_of(
    st.tuples(st.sampled_from(["alpha", "beta"]), single_site_commands),
    st.tuples(st.just("both"), st.tuples(st.just("import_same"), st.integers(1, 3))),
    st.tuples(st.just("meet"), st.just(())),
)


class TwoRuns:
    """The single-site property test's commands, at either site, plus meetings."""

    def __init__(self, pair: Sites) -> None:
        self.pair = pair
        self.runs = {"alpha": Run(pair.alpha), "beta": Run(pair.beta)}
        self.runs["beta"].albums = self.runs["alpha"].albums  # both know every album id
        self.runs["beta"].torrents = self.runs["alpha"].torrents

    def apply(self, where: str, command) -> None:
        if where == "meet":
            self.pair.meet(self.runs["alpha"].now)
        elif where == "both":
            for run in self.runs.values():
                imported(run.db, [f"Shared {i}" for i in range(command[1])], run.now)
        else:
            self.runs[where].apply(command)
            if command[0] == "advance":  # one clock for both sites
                other = "beta" if where == "alpha" else "alpha"
                self.runs[other].now = self.runs[where].now


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(site_commands, min_size=1, max_size=16))
def test_two_sites_always_converge_with_every_event_kept(couch_server, script):
    pair = Sites(couch_server)
    try:
        two = TwoRuns(pair)
        before: set[str] = set()
        for where, command in script:
            two.apply(where, command)
            before |= event_ids_of(pair.alpha) | event_ids_of(pair.beta)
        pair.meet(two.runs["alpha"].now)
        assert event_ids_of(pair.alpha) == before  # no event written anywhere was lost
        assert_converged(pair)
    finally:
        pair.drop()
