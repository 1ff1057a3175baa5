"""The private tracker proven with real BitTorrent clients on loopback (issue 4, §4).

A private torrent made with torf is registered through the Mika API with a
user (and passkey) per client; `distleech tracker serve` runs as its own
process on the test database. Pairs: libtorrent seeding to aria2,
Transmission seeding to libtorrent, aria2 seeding to qBittorrent, libtorrent
seeding to rtorrent (which never sends `completed`). Every download is
checked by sha256, then /api/counts and the users' totals must show what
happened (one snatch per completed download, however often the client
announces afterwards). Refused clients must see the tracker's reason. A
control moves the same kind of data through opentracker, so that a failure
of the others points at our tracker rather than at the clients.

These tests need a loopback-only network namespace (`make test` runs pytest
in one) and the clients' binaries; otherwise they skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import bencode2
import pytest
import requests
from bt_clients import (
    LEECHER_IP,
    NETNS_REASON,
    SEEDER_IP,
    PrivateTorrent,
    accepts,
    die_with_parent,
    downloaded_ok,
    free_port,
    in_loopback_only_netns,
    make_private_torrent,
    missing_binaries,
    running_aria2,
    running_libtorrent,
    running_opentracker,
    running_qbittorrent,
    running_rtorrent,
    running_transmission,
    wait_until,
    write_content,
)

INTERVAL = 2  # the tracker's announce interval in these tests (min interval 1)
FILES = {"01 - Opening.flac": 700_000, "02 - Closing.flac": 300_001, "folder.jpg": 20_000}
TORRENT_ID = 4242

pytestmark = pytest.mark.skipif(not in_loopback_only_netns(), reason=NETNS_REASON)


def needs(*binaries: str) -> None:
    if missing := missing_binaries(*binaries):
        pytest.skip(f"{', '.join(missing)} not installed (make test installs the Debian packages)")


# ---------------------------------------------------------------- the tracker and its API


class Tracker:
    """`distleech tracker serve` as a subprocess on the test database."""

    def __init__(self, db: Any, workdir: Path, interval: int = INTERVAL) -> None:
        self.port = free_port()
        self.log = workdir / "tracker.log"
        env = {
            **os.environ,
            "DISTLEECH_COUCHDB__URL": db.server_url,
            "DISTLEECH_COUCHDB__DATABASE": db.name,
            "DISTLEECH_TRACKER__HOST": "127.0.0.1",
            "DISTLEECH_TRACKER__PORT": str(self.port),
            "DISTLEECH_TRACKER__INTERVAL_SECONDS": str(interval),
            "DISTLEECH_TRACKER__MIN_INTERVAL_SECONDS": "1",
            "DISTLEECH_TRACKER__FLUSH_SECONDS": "0.2",
            "DISTLEECH_SCHEDULER__ENABLED": "false",
        }
        for ours, theirs in (("USERNAME", "USER"), ("PASSWORD", "PASSWORD")):
            if os.environ.get(f"TEST_COUCHDB_{theirs}"):  # as conftest's couch_server
                env[f"DISTLEECH_COUCHDB__{ours}"] = os.environ[f"TEST_COUCHDB_{theirs}"]
        distleech = Path(sys.executable).with_name("distleech")
        workdir.mkdir(parents=True, exist_ok=True)
        self.out = self.log.open("wb")
        self.process = subprocess.Popen(
            [str(distleech), "tracker", "serve"],
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            wait_until(self._up, 20, "the tracker to listen")
        except BaseException:
            self.stop()
            raise
        self.base = f"http://127.0.0.1:{self.port}"

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the tracker exited:\n{self.log.read_text()[-3000:]}")
        return accepts("127.0.0.1", self.port)

    def announce_url(self, passkey: str, *, in_path: bool = False) -> str:
        """Fairywren's /<passkey>/announce, or the query form libtorrent and qBittorrent
        need on loopback (they refuse the path form there: "SSRF mitigation")."""
        if in_path:
            return f"{self.base}/{passkey}/announce"
        return f"{self.base}/announce?passkey={passkey}"

    def scrape(self, passkey: str, info_hash: str) -> dict[bytes, Any]:
        quoted = "".join(f"%{b:02X}" for b in bytes.fromhex(info_hash))
        url = f"{self.base}/scrape?passkey={passkey}&info_hash={quoted}"
        reply: dict[bytes, Any] = bencode2.bdecode(requests.get(url, timeout=5).content)
        return reply

    def stop(self) -> None:
        """SIGTERM: a clean shutdown writes everything behind."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.out.close()


@pytest.fixture
def start_tracker(db, couch_server, tmp_path):
    """Start the tracker (once per test) with an announce interval; stop it afterwards."""
    started = []

    def start(interval: int = INTERVAL) -> Tracker:
        started.append(Tracker(db, tmp_path / "tracker", interval))
        return started[-1]

    yield start
    for process in started:
        process.stop()
    with contextlib.suppress(Exception):
        couch_server.delete_database(f"{db.name}_peers")


@pytest.fixture
def tracker(start_tracker):
    return start_tracker()


class MikaApi:
    """The management API (admin auth) through the web app, as a site would call it."""

    def __init__(self, client: Any, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.client.open(path, method=method, json=body, headers=self.headers)
        assert response.status_code == status, (path, response.status_code, response.get_json())
        return response.get_json()

    def add_user(self, user_id: int, name: str, passkey: str, *, can_leech: bool = True) -> str:
        body = {"user_id": user_id, "name": name, "passkey": passkey, "can_leech": can_leech}
        self.call("POST", "/api/user", body, status=201)
        return passkey

    def allow_client(self, prefix: str, client: str) -> None:
        self.call("POST", "/api/whitelist", {"prefix": prefix, "client": client}, status=201)

    def register(self, torrent: PrivateTorrent, torrent_id: int = TORRENT_ID) -> None:
        body = {"info_hash": torrent.info_hash, "torrent_id": torrent_id, "name": torrent.name}
        self.call("POST", "/api/torrent", body, status=201)

    def counts(self, info_hash: str) -> dict[str, Any]:
        rows = [r for r in self.call("GET", "/api/counts") if r["info_hash"] == info_hash]
        assert len(rows) == 1, rows
        return dict(rows[0])

    def user(self, user_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/user/{user_id}"))


@pytest.fixture
def api(make_app, admin_auth):
    return MikaApi(make_app().test_client(), admin_auth)


def eventually(read: Any, check: Any, what: str, timeout: float = 10) -> Any:
    """Poll read() until check(value); on timeout fail showing the last value."""
    last: list[Any] = [None]

    def probe() -> bool:
        last[0] = read()
        return bool(check(last[0]))

    try:
        wait_until(probe, timeout, what, step=0.2)
    except AssertionError:
        raise AssertionError(f"{what}: last seen {last[0]!r}") from None
    return last[0]


def totals(user: dict[str, Any]) -> tuple[int, int, int]:
    return user["uploaded"], user["downloaded"], user["snatches"]


@pytest.fixture
def album(tmp_path) -> PrivateTorrent:
    """A private torrent of an album (files not on piece boundaries), made with torf."""
    content = write_content(tmp_path / "seed" / "Album (2006)", FILES, seed=7)
    return make_private_torrent(content, "http://127.0.0.1:9/announce", piece_size=32 * 1024)


def setup_swarm(api: MikaApi, tracker: Tracker, torrent: PrivateTorrent, users: dict[int, str]):
    """Register users (passkey per user) and then the torrent; wait until the tracker has them.

    The tracker follows CouchDB's _changes in order, so once the torrent (the
    last registration) answers a scrape with the last user's passkey, the
    whitelist and users registered before it are loaded too.
    """
    passkeys = {}
    for user_id, name in users.items():
        passkeys[user_id] = api.add_user(user_id, name, f"pk{user_id:02d}" + "x" * 28)
    api.register(torrent)
    last = passkeys[max(passkeys)]
    key = bytes.fromhex(torrent.info_hash)
    eventually(
        lambda: tracker.scrape(last, torrent.info_hash),
        lambda reply: key in reply.get(b"files", {}),
        "the tracker to learn the registrations",
    )
    return passkeys


def bytes_match(counted: int, size: int) -> bool:
    """A transfer's bytes as the tracker summed them: at least the payload, never twice it."""
    return size <= counted < 2 * size


# ---------------------------------------------------------------- pairs of real clients


def test_libtorrent_seeds_to_aria2(api, start_tracker, album, tmp_path):
    needs("aria2c")
    # nobody needs to re-announce here: with a long interval no peer is reaped
    # during the test, so the counts can only fall through `stopped` announces
    tracker = start_tracker(interval=30)
    # the whitelist lists both clients: listed clients are let in
    api.allow_client("-LT", "libtorrent")
    api.allow_client("A2-", "aria2")
    pk = setup_swarm(api, tracker, album, {1: "seeder", 2: "leecher"})

    with running_libtorrent(SEEDER_IP) as seeder:
        # 1. libtorrent seeds from the original files; the tracker counts one seeder
        ih = seeder.add(album.metainfo(tracker.announce_url(pk[1])), album.content.parent)
        wait_until(lambda: seeder.is_seeding(ih) and seeder.tracker_replies(), 20, "the seed")
        assert seeder.tracker_errors() == []
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 1, "one seeder")

        # 2. aria2 downloads, gets the seeder from the tracker, exits once complete
        torrent_file = tmp_path / "aria2.torrent"
        torrent_file.write_bytes(album.metainfo(tracker.announce_url(pk[2], in_path=True)))
        with running_aria2(torrent_file, tmp_path / "aria2", LEECHER_IP, tmp_path / "a2.log") as a2:
            assert a2.wait(60) == 0, a2.output()[-3000:]
        assert downloaded_ok(tmp_path / "aria2", album)

        # 3. aria2 is gone (it announced completed, then stopped): one seeder, one snatch
        counts = eventually(
            lambda: api.counts(ih),
            lambda c: (c["seeders"], c["leechers"], c["snatches"]) == (1, 0, 1),
            "the leecher to have left with one snatch",
        )
        assert counts["torrent_id"] == TORRENT_ID
        # 4. the seeder stops (libtorrent announces stopped with what it uploaded)
        seeder.remove(ih)

    eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 0, "the seeder to have left")
    assert api.counts(ih)["snatches"] == 1
    leecher = eventually(
        lambda: api.user(2), lambda u: bytes_match(u["downloaded"], album.size), "leecher totals"
    )
    assert (leecher["uploaded"], leecher["snatches"]) == (0, 1)
    snatched = api.call("GET", "/api/user/2/torrents")["snatched"]
    assert [s["info_hash"] for s in snatched] == [ih]
    seeder_totals = eventually(
        lambda: api.user(1), lambda u: bytes_match(u["uploaded"], album.size), "seeder totals"
    )
    assert (seeder_totals["downloaded"], seeder_totals["snatches"]) == (0, 0)


def test_transmission_seeds_to_libtorrent(api, tracker, album, tmp_path):
    needs("transmission-daemon", "transmission-remote")
    pk = setup_swarm(api, tracker, album, {3: "seeder", 4: "leecher"})
    ih = album.info_hash

    with running_transmission(tmp_path / "transmission", SEEDER_IP) as seeder:
        # 1. Transmission seeds (it never connects out to loopback peers, but accepts)
        torrent_file = tmp_path / "transmission.torrent"
        torrent_file.write_bytes(album.metainfo(tracker.announce_url(pk[3], in_path=True)))
        seeder.add(torrent_file, album.content.parent)
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 1, "one seeder", timeout=20)

        with running_libtorrent(LEECHER_IP) as leecher:
            # 2. libtorrent downloads from it, then seeds on and keeps announcing
            leecher.add(album.metainfo(tracker.announce_url(pk[4])), tmp_path / "libtorrent")
            wait_until(lambda: leecher.is_seeding(ih), 60, "libtorrent to complete the download")
            assert downloaded_ok(tmp_path / "libtorrent", album)
            assert leecher.tracker_errors() == []

            # 3. `completed`, then a regular announce as a seeder: one snatch, two seeders
            wait_until(lambda: leecher.replies_after_completed() >= 2, 15, "a re-announce")
            counts = eventually(
                lambda: api.counts(ih),
                lambda c: (c["seeders"], c["leechers"]) == (2, 0),
                "two seeders",
            )
            assert counts["snatches"] == 1
            leecher.remove(ih)
        # 4. Transmission stops: it announces `stopped` with what it uploaded
        seeder.stop_all()
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 0, "everyone to have left")

    assert api.counts(ih)["snatches"] == 1
    leecher_totals = eventually(
        lambda: api.user(4), lambda u: bytes_match(u["downloaded"], album.size), "leecher totals"
    )
    assert leecher_totals["snatches"] == 1
    seeder_totals = eventually(
        lambda: api.user(3), lambda u: bytes_match(u["uploaded"], album.size), "seeder totals"
    )
    assert (seeder_totals["downloaded"], seeder_totals["snatches"]) == (0, 0)


def test_aria2_seeds_to_qbittorrent(api, start_tracker, album, tmp_path):
    needs("aria2c", "qbittorrent-nox")
    # qBittorrent re-announces at most every 300 s (libtorrent's min_announce_interval,
    # not a qBittorrent setting): a longer interval keeps it from being reaped (after
    # twice the interval) between its `started` and `completed` announces
    tracker = start_tracker(interval=15)
    pk = setup_swarm(api, tracker, album, {5: "seeder", 6: "leecher"})
    ih = album.info_hash

    # 1. aria2 checks the original files and seeds them
    torrent_file = tmp_path / "aria2.torrent"
    torrent_file.write_bytes(album.metainfo(tracker.announce_url(pk[5])))
    log = tmp_path / "aria2.log"
    with running_aria2(torrent_file, album.content.parent, SEEDER_IP, log, seed=True) as seeder:
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 1, "one seeder", timeout=20)

        # 2. qBittorrent downloads from it (its WebUI API adds the .torrent)
        with running_qbittorrent(tmp_path / "qbittorrent", LEECHER_IP) as leecher:
            leecher.add(album.metainfo(tracker.announce_url(pk[6])), tmp_path / "qbittorrent-dl")
            wait_until(lambda: leecher.progress(ih) == 1, 60, "qBittorrent to complete")
            assert downloaded_ok(tmp_path / "qbittorrent-dl", album)
            eventually(
                lambda: api.counts(ih),
                lambda c: c["snatches"] == 1 and c["leechers"] == 0,
                "the snatch",
            )
            assert [t["msg"] for t in leecher.trackers(ih)] == [""]  # no tracker error
            # 3. qBittorrent pauses: it announces `stopped` with what it downloaded
            leecher.pause_all()
            leecher_totals = eventually(
                lambda: api.user(6),
                lambda u: bytes_match(u["downloaded"], album.size),
                "leecher totals",
            )
        assert leecher_totals["snatches"] == 1
        assert seeder.process.poll() is None, seeder.output()[-2000:]
    # 4. aria2 stopped (SIGINT: it announces `stopped`)
    counts = eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 0, "everyone gone")
    assert counts["snatches"] == 1
    seeder_totals = eventually(
        lambda: api.user(5), lambda u: bytes_match(u["uploaded"], album.size), "seeder totals"
    )
    assert (seeder_totals["downloaded"], seeder_totals["snatches"]) == (0, 0)


def test_libtorrent_seeds_to_rtorrent_which_never_sends_completed(
    api, start_tracker, album, tmp_path
):
    needs("rtorrent")
    # rtorrent re-announces on its own schedule (minutes): a long interval keeps it
    # from being reaped, so its only announces are `started` and `stopped`
    tracker = start_tracker(interval=30)
    pk = setup_swarm(api, tracker, album, {9: "seeder", 10: "leecher"})
    ih = album.info_hash

    with running_libtorrent(SEEDER_IP) as seeder:
        seeder.add(album.metainfo(tracker.announce_url(pk[9])), album.content.parent)
        wait_until(lambda: seeder.is_seeding(ih) and seeder.tracker_replies(), 20, "the seed")
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 1, "one seeder")

        # 1. rtorrent downloads; the tracker still knows it only as a leecher
        torrent_file = tmp_path / "rtorrent.torrent"
        torrent_file.write_bytes(album.metainfo(tracker.announce_url(pk[10], in_path=True)))
        download = tmp_path / "rtorrent-dl"
        with running_rtorrent(torrent_file, download, LEECHER_IP, tmp_path / "rtorrent") as rt:
            wait_until(rt.finished, 30, "rtorrent to complete the download")
            assert downloaded_ok(download, album)
            counts = api.counts(ih)
            assert (counts["seeders"], counts["leechers"], counts["snatches"]) == (1, 1, 0)
        # 2. rtorrent quits: `stopped` with left=0 is the first the tracker hears of it
        assert "sending 'completed" not in rt.output()
        assert "sending 'stopped" in rt.output()

    counts = eventually(
        lambda: api.counts(ih), lambda c: c["snatches"] == 1, "the snatch from left going to 0"
    )
    assert (counts["seeders"], counts["leechers"]) == (0, 0)
    leecher = eventually(
        lambda: api.user(10), lambda u: bytes_match(u["downloaded"], album.size), "leecher totals"
    )
    assert leecher["snatches"] == 1


# ---------------------------------------------------------------- refusals, seen by the clients


def test_refused_clients_are_told_why(api, tracker, album, tmp_path):
    needs("transmission-daemon", "transmission-remote", "aria2c")
    api.allow_client("-LT", "libtorrent")  # only libtorrent is let in
    pk = setup_swarm(api, tracker, album, {7: "member", 8: "seed-only"})
    api.call("PATCH", "/api/user/8", {"can_leech": False})
    ih = album.info_hash
    wrong = "not-a-passkey-of-anyone-0000000000"

    with (
        running_libtorrent(SEEDER_IP) as seeder,
        running_libtorrent(LEECHER_IP) as stranger,
        running_libtorrent("127.0.0.4") as seed_only,
        running_transmission(tmp_path / "transmission", "127.0.0.5") as transmission,
    ):
        # the control: a member's whitelisted client is accepted and seeds
        seeder.add(album.metainfo(tracker.announce_url(pk[7])), album.content.parent)
        wait_until(lambda: seeder.is_seeding(ih) and seeder.tracker_replies(), 20, "the seed")
        eventually(lambda: api.counts(ih), lambda c: c["seeders"] == 1, "one seeder")

        # a bad passkey: libtorrent shows the tracker's failure reason
        stranger.add(album.metainfo(tracker.announce_url(wrong)), tmp_path / "stranger")
        errors = wait_until(stranger.tracker_errors, 15, "libtorrent's tracker error")
        assert "unknown passkey" in errors[0], errors

        # a user who may not leech, on a whitelisted client
        seed_only.add(album.metainfo(tracker.announce_url(pk[8])), tmp_path / "seed-only")
        errors = wait_until(seed_only.tracker_errors, 15, "libtorrent's tracker error")
        assert "may not leech" in errors[0], errors

        # a client not on the whitelist, with a good passkey: Transmission says why
        torrent_file = tmp_path / "transmission.torrent"
        torrent_file.write_bytes(album.metainfo(tracker.announce_url(pk[7])))
        transmission.add(torrent_file, tmp_path / "transmission-dl")
        shown = wait_until(
            lambda: "client not on the whitelist" in (out := transmission.trackers()) and out,
            30,
            "Transmission to show the tracker's error",
        )

        # aria2 is not on the whitelist either: its log carries the reason
        a2_torrent = tmp_path / "aria2.torrent"
        a2_torrent.write_bytes(album.metainfo(tracker.announce_url(pk[7])))
        with running_aria2(a2_torrent, tmp_path / "aria2", "127.0.0.6", tmp_path / "a2.log") as a2:
            wait_until(
                lambda: "failure reason: client not on the whitelist" in a2.output(),
                15,
                "aria2 to log the failure reason",
            )

        # none of them got into the swarm, so none got a byte from the seeder
        counts = api.counts(ih)
        assert (counts["seeders"], counts["leechers"], counts["snatches"]) == (1, 0, 0)
        for refused in (stranger, seed_only):
            assert refused.status(ih).total_payload_download == 0
        assert transmission.percent_done() == 0, shown
        peers = api.call("GET", f"/api/torrent/{ih}/peers")["peers"]
        assert [(p["user_id"], p["ip"]) for p in peers] == [(7, SEEDER_IP)]


# ---------------------------------------------------------------- the drivers' control


def test_control_the_drivers_transfer_through_a_reference_tracker(tmp_path):
    """libtorrent seeding to aria2 through opentracker: if this passes and the pairs above
    fail, the clients and their settings are fine and our tracker is the suspect."""
    needs("aria2c", "opentracker")
    content = write_content(tmp_path / "seed" / "Control", FILES, seed=3)
    control = make_private_torrent(content, "http://127.0.0.1:9/announce")
    with (
        running_opentracker(tmp_path / "opentracker", [control.info_hash]) as announce,
        running_libtorrent(SEEDER_IP) as seeder,
    ):
        seeder.add(control.metainfo(announce), content.parent)
        wait_until(lambda: seeder.tracker_replies(), 20, "the seed's announce")
        torrent_file = tmp_path / "control.torrent"
        torrent_file.write_bytes(control.metainfo(announce))
        with running_aria2(torrent_file, tmp_path / "aria2", LEECHER_IP, tmp_path / "a2.log") as a2:
            assert a2.wait(60) == 0, a2.output()[-3000:]
    assert downloaded_ok(tmp_path / "aria2", control)
