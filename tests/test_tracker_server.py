"""The tracker process end to end: real sockets, the real database, restarts and crashes."""

import signal
import socket
from datetime import timedelta

import pytest
from tracker_process import TrackerProcess, wait_for

from app.store.events import read_events
from app.tracker import accounts, activity, members, peersdb
from app.tracker.peersdb import open_peers_database
from scheduler import jobs

IH = "ab" * 20
PEER_A, PEER_B = b"-LT2110-" + b"A" * 12, b"-TR3000-" + b"B" * 12


@pytest.fixture
def member(db, clock):
    """A registered torrent and a user who may leech; returns the user's passkey."""
    accounts.register_torrent(db, IH, 1, "Album", actor="test", now=clock())
    _, passkey = members.register_user(db, 7, name="bob", actor="test", now=clock())
    return passkey


@pytest.fixture
def peers_db(db, make_app):
    app = make_app()  # the web app creates the peers database and its design document
    return open_peers_database(db, app.extensions["distleech"].settings)


@pytest.fixture
def trackers(db, tmp_path):
    started = []

    def start(**settings):
        started.append(TrackerProcess(db, tmp_path, **settings))
        return started[-1]

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def stored_peers(peers_db):
    doc = peersdb.get_swarm(peers_db, IH)
    return {bytes.fromhex(pid) for pid in (doc or {}).get("peers", {})}


def test_a_registration_reaches_the_running_tracker(db, clock, trackers):
    tracker = trackers()
    members.register_user(db, 1, name="ann", passkey="p" * 32, actor="test", now=clock())
    wait_for(
        lambda: (
            b"torrent not registered"
            in tracker.announce(IH, PEER_A, "p" * 32).get(b"failure reason", b"")
        ),
        10,
        "the user to be known",
    )
    accounts.register_torrent(db, IH, 1, "Album", actor="test", now=clock())
    reply = wait_for(
        lambda: (r := tracker.announce(IH, PEER_A, "p" * 32)) and b"complete" in r and r,
        10,
        "the torrent to be known",
    )
    assert reply[b"complete"] == 1
    accounts.unregister_torrent(db, IH, actor="test", now=clock())
    wait_for(
        lambda: b"failure reason" in tracker.announce(IH, PEER_A, "p" * 32),
        10,
        "the torrent to be refused again",
    )


def raw_exchange(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_http_1_0_without_host_and_pipelined_keep_alive(trackers, member):
    tracker = trackers()
    query = f"info_hash={'%AB' * 20}&peer_id={'-CD0303-' + 'x' * 12}&port=1&left=0&passkey={member}"
    reply = raw_exchange(tracker.port, f"GET /announce?{query} HTTP/1.0\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply
    assert b"8:completei1e" in reply
    two = f"GET /scrape?info_hash={'%AB' * 20}&passkey={member} HTTP/1.1\r\nHost: t\r\n\r\n"
    two = two.encode()
    last = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    replies = raw_exchange(tracker.port, two + two + last)
    assert replies.count(b"HTTP/1.1 200") == 3 and replies.count(b"5:files") == 2
    assert raw_exchange(tracker.port, b"POST /announce HTTP/1.0\r\n\r\n").startswith(
        b"HTTP/1.1 405"
    )
    assert raw_exchange(tracker.port, b"BLAH\r\n\r\n").startswith(b"HTTP/1.1 400")


def current(db, peers_db, user_id=7):
    """A user's totals as the API shows them: recorded summaries plus the running tally."""
    user = activity.current_user(db, peers_db, user_id)
    return user["uploaded"], user["downloaded"], user["snatches"]


def recorded(db, user_id=7):
    """A user's totals in the projection, from summary events alone."""
    user = members.get_tracker_user(db, user_id)
    return user["uploaded"], user["downloaded"], user["snatches"]


def test_swarms_transfers_and_snatches_are_written_behind(
    db, peers_db, trackers, member, make_app, admin_auth
):
    tracker = trackers()
    tracker.announce(IH, PEER_A, member, event="started", left=100)
    wait_for(lambda: stored_peers(peers_db) == {PEER_A}, 10, "the swarm to be stored")
    tracker.announce(IH, PEER_A, member, left=0, uploaded=300, downloaded=100)
    tracker.announce(IH, PEER_A, member, left=0, uploaded=500, downloaded=100, event="completed")

    wait_for(lambda: current(db, peers_db) == (500, 100, 1), 10, "the user's totals and snatch")
    assert recorded(db) == (0, 0, 0)  # the summary waits for the hour's end or a stop
    shown = make_app().test_client().get("/api/user/7", headers=admin_auth).get_json()
    assert (shown["uploaded"], shown["downloaded"], shown["snatches"]) == (500, 100, 1)
    [counts] = activity.current_counts(db, peers_db)
    assert counts["snatches"] == 1
    swarm = peersdb.get_swarm(peers_db, IH)
    assert (swarm["seeders"], swarm["leechers"]) == (1, 0)
    tracker.announce(IH, PEER_A, member, left=0, uploaded=520, downloaded=100, event="stopped")
    wait_for(lambda: recorded(db) == (520, 100, 1), 10, "the session's summary")
    wait_for(lambda: peersdb.get_swarm(peers_db, IH) is None, 10, "the empty swarm to go")
    assert current(db, peers_db) == (520, 100, 1)
    [summary] = [e for e in read_events(db, "trackeruser:7") if e["name"] == "transferred"]
    assert summary["data"]["reason"] == "stopped"


def test_a_crash_loses_no_written_traffic_and_credits_none_twice(db, peers_db, trackers, member):
    tracker = trackers()
    tracker.announce(IH, PEER_A, member, event="started", left=100)
    tracker.announce(IH, PEER_A, member, left=0, uploaded=100, downloaded=100)
    # only counters move from here: the swarm document is not rewritten for a refresh
    tracker.announce(IH, PEER_A, member, left=0, uploaded=400, downloaded=100)
    wait_for(lambda: current(db, peers_db) == (400, 100, 1), 10, "the tally to be written")
    tracker.stop(signal.SIGKILL)
    tracker.start()
    files = tracker.scrape(member, IH)[b"files"]
    assert files[bytes.fromhex(IH)][b"downloaded"] == 1  # the tally's snatch counts
    tracker.announce(IH, PEER_A, member, left=0, uploaded=450, downloaded=100)
    assert tracker.stop(signal.SIGTERM) == 0
    assert recorded(db) == (450, 100, 1)  # not 400 + 450
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 1


def test_what_a_client_reports_at_start_is_not_credited(db, peers_db, trackers, member):
    tracker = trackers()
    webtorrent = b"-WW0300-" + b"w" * 12
    tracker.announce(IH, webtorrent, member, event="started", left=0, downloaded=3940351)
    tracker.announce(IH, webtorrent, member, left=0, downloaded=3940351, uploaded=70)
    ctorrent = b"-CD0303-" + b"c" * 12  # seeding: it checks its files after `started`
    tracker.announce(IH, ctorrent, member, event="started", left=5000)
    tracker.announce(IH, ctorrent, member, left=0)
    assert tracker.stop(signal.SIGTERM) == 0
    assert recorded(db) == (70, 0, 0)
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 0


def test_a_clean_shutdown_loses_nothing_and_a_restart_restores_the_swarm(
    peers_db, trackers, member
):
    tracker = trackers(flush_seconds=3600)  # only the shutdown's final flush can write
    tracker.announce(IH, PEER_A, member, event="started", left=0, port=7001)
    assert tracker.stop(signal.SIGTERM) == 0
    assert stored_peers(peers_db) == {PEER_A}
    tracker.start()
    reply = tracker.announce(IH, PEER_B, member, event="started", left=10)
    assert reply[b"peers"] == bytes([127, 0, 0, 1]) + (7001).to_bytes(2, "big")
    files = tracker.scrape(member, IH)[b"files"]
    assert files[bytes.fromhex(IH)][b"complete"] == 1
    assert files[bytes.fromhex(IH)][b"incomplete"] == 1


def test_after_a_crash_the_swarm_comes_back_from_the_database(peers_db, trackers, member):
    tracker = trackers()
    tracker.announce(IH, PEER_A, member, event="started", left=0, port=7001)
    wait_for(lambda: stored_peers(peers_db) == {PEER_A}, 10, "the swarm to be stored")
    tracker.stop(signal.SIGKILL)
    tracker.start()
    reply = tracker.announce(IH, PEER_B, member, event="started", left=10)
    assert (reply[b"complete"], reply[b"incomplete"]) == (1, 1)


def test_stale_peers_are_not_restored(peers_db, trackers, member, clock):
    tracker = trackers(interval_seconds=60)
    tracker.announce(IH, PEER_A, member, event="started", left=0)
    tracker.stop(signal.SIGTERM)
    swarm = peersdb.get_swarm(peers_db, IH)
    swarm["peers"][PEER_A.hex()]["last_seen"] -= 121  # silent for over twice the interval
    peers_db.put(swarm)
    tracker.start()
    reply = tracker.announce(IH, PEER_B, member, event="started", left=10)
    assert (reply[b"complete"], reply[b"peers"]) == (0, b"")


def test_the_scheduler_reaps_stale_peers_while_no_tracker_runs(db, peers_db, make_app, clock):
    from tracker_factories import make_swarm

    now = clock()
    make_swarm(
        peers_db,
        IH,
        {"-LT2110-old": {"last_seen": (now - timedelta(hours=2)).timestamp()}, "-LT2110-new": {}},
        now=now,
    )
    reap = jobs.stale_peer_reaper(make_app().extensions["distleech"].settings)
    assert reap(db, now) == 1  # the default interval is 30 minutes: 2 hours is stale
    swarm = peersdb.get_swarm(peers_db, IH)
    assert list(swarm["peers"]) == [b"-LT2110-new".hex()] and swarm["seeders"] == 1
    assert reap(db, now + timedelta(hours=2)) == 1
    assert peersdb.get_swarm(peers_db, IH) is None


def test_a_clean_shutdown_closes_keep_alive_connections_and_writes_their_announces(
    db, peers_db, trackers, member
):
    import requests

    tracker = trackers(flush_seconds=3600)  # only the shutdown's final write can store
    session = requests.Session()  # one keep-alive connection for every announce
    query = f"info_hash={'%AB' * 20}&peer_id={'-LT2110-' + 'k' * 12}&port=7&passkey={member}"
    for step in ("&left=10&uploaded=0&event=started", "&left=0&uploaded=5000&downloaded=10"):
        assert session.get(f"{tracker.base}/announce?{query}{step}", timeout=5).ok
    assert tracker.stop(signal.SIGTERM) == 0
    user = members.get_tracker_user(db, 7)
    assert (user["uploaded"], user["snatches"]) == (5000, 1)
    assert stored_peers(peers_db) == {b"-LT2110-" + b"k" * 12}


def test_oversized_and_idle_connections_are_closed(trackers, member):
    tracker = trackers(idle_seconds=1, interval_seconds=4)
    reply = raw_exchange(tracker.port, b"GET /announce?" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414")
    with socket.create_connection(("127.0.0.1", tracker.port), timeout=10) as sock:
        sock.sendall(b"GET /announce?passkey=")  # never finished
        assert sock.recv(100) == b""  # closed by the tracker, not by our timeout
    assert tracker.announce(IH, PEER_A, member)[b"complete"] == 1  # and it still answers


def test_deleting_a_user_drops_their_peers(db, clock, trackers, member):
    tracker = trackers()
    _, other = members.register_user(db, 8, name="eve", actor="test", now=clock())
    wait_for(lambda: b"complete" in tracker.announce(IH, PEER_B, other), 10, "eve to be known")
    members.delete_user(db, 8, actor="test", now=clock())
    wait_for(
        lambda: tracker.announce(IH, PEER_A, member, left=10)[b"peers"] == b"",
        10,
        "eve's peer to go with her account",
    )
