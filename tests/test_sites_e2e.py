"""Two sites with their own apps and schedulers: workers at both, a partition, a
reunion. Everything real: two bundled servers, the HTTP API each site's
workers call, each site's APScheduler running its replication and projector
jobs under its own leader lease. The partition is what an operator or a
network does to replication: its jobs stop, everything else goes on.
"""

from __future__ import annotations

import time

import pytest
from conftest import token_header
from factories import read_model

from app import create_app
from app.accounts.auth import issue_token
from app.config import load_settings
from app.queues.albums import import_albums
from app.store.events import event_log
from app.store.projections import rebuild_projections
from app.timeutil import iso, utcnow
from scheduler import build_scheduler
from scheduler.leader import LEADER_DOC_ID, Leader

TIMEOUT = 60.0


def site_config(db, own, other_db, other):
    return {
        "couchdb": {"url": db.server_url, "database": db.name},
        "site": {"name": own},
        "sites": {other: {"url": f"{other_db.server_url}/{event_log(other_db).name}"}},
        # both sites hand out the head of the queue, so double leases happen
        "leases": {"site_shares": False},
        "scheduler": {
            "replicate_seconds": 0.3,
            "projector_seconds": 0.3,
            "reap_seconds": 5,
            "stats_seconds": 1,
        },
    }


class RunningSite:
    """A site's app (test client) and its scheduler, leading, jobs running."""

    def __init__(self, db, own, other_db, other) -> None:
        config = site_config(db, own, other_db, other)
        self.db, self.name, self.other = db, own, other
        self.client = create_app(config).test_client()
        settings = load_settings(config)
        self.leader = Leader(db, lease_seconds=600, holder=f"{own}-scheduler")
        assert self.leader.acquire(utcnow())
        self.scheduler = build_scheduler(settings, db, leader=self.leader)
        self.scheduler.start()

    def partition(self) -> None:
        self.scheduler.pause_job(f"replicate_{self.other}")

    def reunite(self) -> None:
        self.scheduler.resume_job(f"replicate_{self.other}")

    def lease(self, token, rows):
        response = self.client.get(f"/metadata/{rows}", headers=token_header(token))
        assert response.status_code == 200, response.get_data(as_text=True)
        return [album["id"] for album in response.get_json()["albums"]]

    def can_lease(self, token):
        response = self.client.get("/metadata/1", headers=token_header(token))
        return response.status_code == 200 and len(response.get_json()["albums"]) == 1

    def submit(self, token, found):
        body = {
            str(album): [{"site": "passtheheadphones.me", "torrentId": t}] for album, t in found
        }
        response = self.client.post("/metadata/submit", json=body, headers=token_header(token))
        assert response.status_code == 200, response.get_data(as_text=True)

    def read_model(self):
        """The projections (not the site's own leader lease, which stays local)."""
        return read_model(self.db, leave_out={LEADER_DOC_ID})

    def event_ids(self):
        log = event_log(self.db)
        rows = log.server.get_json(f"{log.path}/_all_docs")["rows"]
        return {row["id"] for row in rows if row["id"].startswith("ev:")}

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)


@pytest.fixture
def sites(make_site, second_couch_url):
    alpha_db, beta_db = make_site("alpha"), make_site("beta", second_couch_url)
    alpha = RunningSite(alpha_db, "alpha", beta_db, "beta")
    beta = RunningSite(beta_db, "beta", alpha_db, "alpha")
    yield alpha, beta
    for site in (alpha, beta):
        site.stop()


def eventually(check, what, explain=None):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    if explain is not None:
        what = f"{what}: {explain()}"
    pytest.fail(f"not within {TIMEOUT:.0f} s: {what}")


def agree(alpha, beta, what):
    eventually(lambda: not differences(alpha, beta), what, lambda: differences(alpha, beta))


def differences(alpha, beta):
    """What differs between the two read models (for a failure's message)."""
    a, b = alpha.read_model(), beta.read_model()
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def test_two_sites_work_apart_and_agree_when_they_meet_again(sites):
    alpha, beta = sites
    started = iso(utcnow())
    # a worker token made at alpha works at beta once replication brought it
    token_a = issue_token(alpha.db, "worker-a", "worker", actor="op", now=utcnow())
    rows = [(i + 2, "Cockburn, Bruce", f"Album {i}") for i in range(40)]
    import_albums(alpha.db, rows, actor="op", now=utcnow())
    eventually(lambda: beta.can_lease(token_a), "beta knows alpha's token and albums")
    token_b = issue_token(beta.db, "worker-b", "worker", actor="op", now=utcnow())

    # together: a result at each site
    alpha.submit(token_a, [(album, 1) for album in alpha.lease(token_a, 3)])
    beta.submit(token_b, [(album, 2) for album in beta.lease(token_b, 3)])
    eventually(
        lambda: not differences(alpha, beta), "both sites agree", lambda: differences(alpha, beta)
    )

    alpha.partition()
    beta.partition()
    apart_alpha, apart_beta = alpha.lease(token_a, 5), beta.lease(token_b, 5)
    doubles = set(apart_alpha) & set(apart_beta)
    assert doubles  # apart, without shares, both hand out the head of the queue
    both_found = sorted(doubles)[0]
    alpha.submit(token_a, [(both_found, 101)])
    beta.submit(token_b, [(both_found, 202)])
    written_apart = alpha.event_ids() | beta.event_ids()

    alpha.reunite()
    beta.reunite()
    agree(alpha, beta, "both read models agree again")

    assert alpha.event_ids() == beta.event_ids() >= written_apart  # no fact lost
    for site in (alpha, beta):
        assert rebuild_projections(site.db, check_only=True).differing == []
    model = alpha.read_model()
    for album in doubles - {both_found}:  # each double lease shows both holders
        lease = model[f"album:{album}"]["lease"]
        holders = [lease["holder"], *(other["holder"] for other in lease["also_held_by"])]
        assert sorted(holders) == ["worker-a", "worker-b"]
    found = model[f"album:{both_found}"]  # the first result filled it, the other is kept
    assert found["state"] == "found"
    assert sorted(t["torrentId"] for t in found["torrents"]) == [101, 202]
    # each site's scheduler kept its own lease (the document never crossed) and its
    # jobs ran at both throughout: the stats job refreshed each site's own snapshot
    for site in (alpha, beta):
        assert site.db.get(LEADER_DOC_ID)["holder"] == f"{site.name}-scheduler"
        assert site.db.get("_local/stats-snapshot")["as_of"] > started
