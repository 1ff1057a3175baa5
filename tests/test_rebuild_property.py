"""Invariant 4, property-based: whatever commands ran, projections equal their rebuild."""

from __future__ import annotations

import uuid
from datetime import timedelta

from conftest import START
from factories import album_id_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.queues.albums import import_albums, lease_albums, submit_metadata
from app.queues.downloads import TorrentRef, lease_downloads, submit_downloads
from app.queues.leasing import QueueLeaser, reap_expired_leases
from app.store.catchup import catch_up_projections
from app.store.projections import rebuild_projections
from app.store.setup import init_database

SITES = ["passtheheadphones.me", "orpheus.network"]
HOLDERS = ["w1", "w2", "w3"]

pick = st.integers(min_value=0, max_value=50)  # an index into what exists so far
commands = st.one_of(
    st.tuples(st.just("import"), st.integers(min_value=1, max_value=4)),
    st.tuples(st.just("lease"), st.sampled_from(HOLDERS), st.integers(1, 3), st.integers(0, 1)),
    st.tuples(
        st.just("found"), st.sampled_from(HOLDERS), pick, st.sampled_from(SITES), st.integers(1, 3)
    ),
    st.tuples(st.just("not_found"), st.sampled_from(HOLDERS), pick),
    st.tuples(st.just("advance"), st.sampled_from([1, 30, 61, 24 * 60 + 1])),
    st.tuples(st.just("reap")),
    st.tuples(st.just("lease_downloads"), st.sampled_from(SITES), st.integers(1, 2)),
    st.tuples(st.just("fill"), pick, st.sampled_from(["/a", "/b"])),
)


class Run:
    """Applies commands to one database through the domain operations the API calls."""

    def __init__(self, db):
        self.db = db
        self.now = START
        self.albums: list[int] = []
        self.torrents: list[TorrentRef] = []
        # two leasers: two processes sharing the database
        self.leasers = [QueueLeaser(db), QueueLeaser(db)]

    def apply(self, command):
        getattr(self, "do_" + command[0])(*command[1:])

    def do_import(self, count):
        rows = [(i, "Artist", f"Title {len(self.albums) + i}") for i in range(count)]
        import_albums(self.db, rows, actor="op", now=self.now)
        self.albums += [album_id_for(a, t) for _, a, t in rows]

    def do_lease(self, holder, rows, process):
        lease_albums(self.leasers[process], holder, rows, self.now, 60)

    def do_found(self, holder, index, site, torrent_id):
        if self.albums:
            ref = TorrentRef(site, torrent_id)
            album = self.albums[index % len(self.albums)]
            submit_metadata(self.db, {album: [ref]}, holder=holder, now=self.now, retry_minutes=60)
            self.torrents.append(ref)

    def do_not_found(self, holder, index):
        album = self.albums[index % len(self.albums)] if self.albums else 1  # 1: unknown
        submit_metadata(self.db, {album: []}, holder=holder, now=self.now, retry_minutes=60)

    def do_advance(self, minutes):
        self.now += timedelta(minutes=minutes)

    def do_reap(self):
        reap_expired_leases(self.db, self.now)

    def do_lease_downloads(self, site, rows):
        lease_downloads(self.leasers[0], site, "w1", rows, self.now, 1 / 24)

    def do_fill(self, index, path):
        if self.torrents:
            ref = self.torrents[index % len(self.torrents)]
            submit_downloads(self.db, {path: [ref]}, holder="w1", now=self.now)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(commands, min_size=1, max_size=14))
def test_projections_always_equal_their_rebuild(couch_server, script):
    name = f"test_prop_{uuid.uuid4().hex[:12]}"
    db = couch_server.create_database(name)
    try:
        init_database(db, warm=False)
        run = Run(db)
        for command in script:
            run.apply(command)
        report = rebuild_projections(db, check_only=True)
        assert report.differing == []
        assert catch_up_projections(db) == 0  # no projection lags its events either
    finally:
        couch_server.delete_database(name)
