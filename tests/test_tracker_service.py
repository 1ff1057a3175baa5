"""What the tracker answers and remembers, announce by announce (no sockets, a fixed clock).

The directory is filled with projection documents exactly as the tracker reads
them from CouchDB (app.tracker.directory), so these are the tracker's real inputs.
"""

import dataclasses
import hashlib
from urllib.parse import quote_from_bytes

import bencode2
import pytest

from app.config import TrackerSettings
from app.tracker.directory import Directory
from app.tracker.service import Tracker
from app.tracker.swarm import Swarms

IH = bytes.fromhex("11" * 20)
OTHER_IH = bytes.fromhex("22" * 20)
PK, LEECHLESS_PK = "a" * 32, "b" * 32


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def directory():
    d = Directory()
    d.apply({"_id": f"tracked:{IH.hex()}", "registered": True, "torrent_id": 7, "snatches": 0})
    for user_id, passkey, can_leech in ((1, PK, True), (2, LEECHLESS_PK, False)):
        d.apply(
            {
                "_id": f"trackeruser:{user_id}",
                "user_id": user_id,
                "active": True,
                "can_leech": can_leech,
                "passkey_sha256": hashlib.sha256(passkey.encode()).hexdigest(),
            }
        )
    return d


@pytest.fixture
def tracker(directory, clock):
    settings = TrackerSettings(
        interval_seconds=60, min_interval_seconds=30, numwant_max=5, max_peers_per_user=30
    )
    return Tracker(settings, directory, Swarms(), clock)


def peer_id(n, client=b"-LT2110-"):
    return client + n.to_bytes(12, "big")


def announce(tracker, n, *, left=100, event="", ip="127.0.0.2", passkey=PK, ih=IH, **extra):
    params = {
        "info_hash": quote_from_bytes(ih),
        "peer_id": quote_from_bytes(extra.pop("pid", peer_id(n))),
        "port": 6881 + n,
        "uploaded": extra.pop("uploaded", 0),
        "downloaded": extra.pop("downloaded", 0),
        "left": left,
        "event": event,
        "passkey": passkey,
        **extra,
    }
    target = "/announce?" + "&".join(f"{k}={v}" for k, v in params.items())
    status, body = tracker.handle(target.encode(), ip)
    assert status == 200
    return bencode2.bdecode(body)


def compact_ports(reply, key=b"peers"):
    raw = reply.get(key, b"")
    size = 6 if key == b"peers" else 18
    return sorted(
        int.from_bytes(raw[i + size - 2 : i + size], "big") for i in range(0, len(raw), size)
    )


def test_peers_get_each_other_but_never_themselves(tracker):
    first = announce(tracker, 1, event="started")
    assert (first[b"peers"], first[b"incomplete"], first[b"interval"]) == (b"", 1, 60)
    assert first[b"min interval"] == 30
    second = announce(tracker, 2, left=0, event="started")
    assert compact_ports(second) == [6882]
    assert (second[b"complete"], second[b"incomplete"]) == (1, 1)
    assert compact_ports(announce(tracker, 1)) == [6883]


def test_dictionary_peers_when_compact_is_off(tracker):
    announce(tracker, 1)
    reply = announce(tracker, 2, compact=0)
    assert reply[b"peers"] == [{b"ip": b"127.0.0.2", b"port": 6882, b"peer id": peer_id(1)}]
    assert announce(tracker, 2, compact=0, no_peer_id=1)[b"peers"] == [
        {b"ip": b"127.0.0.2", b"port": 6882}
    ]


def test_ipv6_peers_come_as_peers6(tracker):
    announce(tracker, 1, ip="::1")
    reply = announce(tracker, 2, ip="127.0.0.3")
    assert reply[b"peers"] == b""
    assert reply[b"peers6"] == bytes(15) + b"\x01" + (6882).to_bytes(2, "big")


def test_numwant_is_honoured_and_capped(tracker):
    for n in range(1, 12):
        announce(tracker, n)
    assert len(compact_ports(announce(tracker, 20, numwant=3))) == 3
    assert len(compact_ports(announce(tracker, 20, numwant=500))) == 5  # numwant_max
    assert len(compact_ports(announce(tracker, 20, numwant=0))) == 0


def test_a_seeder_is_given_only_leechers(tracker):
    announce(tracker, 1, left=0)
    announce(tracker, 2, left=0)
    announce(tracker, 3, left=50)
    assert compact_ports(announce(tracker, 4, left=0, numwant=10)) == [6884]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"passkey": "c" * 32}, "unknown passkey"),
        ({"passkey": ""}, "no passkey"),
        ({"ih": OTHER_IH}, "torrent not registered"),
        ({"passkey": LEECHLESS_PK, "left": 10}, "may not leech"),
        ({"port": "x"}, "malformed request"),
    ],
)
def test_refusals_say_why(tracker, kwargs, reason):
    reply = announce(tracker, 1, **kwargs)
    assert reason in reply[b"failure reason"].decode()
    assert tracker.swarms.get(IH) is None  # a refused announce joins no swarm


def test_a_user_who_may_not_leech_may_seed_and_stop(tracker):
    assert b"failure reason" not in announce(tracker, 1, passkey=LEECHLESS_PK, left=0)
    assert b"failure reason" not in announce(tracker, 9, passkey=LEECHLESS_PK, event="stopped")


def test_whitelist_applies_once_it_lists_a_client(tracker, directory):
    assert b"failure reason" not in announce(tracker, 1, pid=peer_id(1, b"-XX0001-"))
    directory.apply({"_id": "whitelist:-LT", "active": True, "client": "libtorrent"})
    refused = announce(tracker, 2, pid=peer_id(2, b"-XX0001-"))
    assert "client not on the whitelist (-XX0001-" in refused[b"failure reason"].decode()
    assert b"failure reason" not in announce(tracker, 3)
    directory.apply({"_id": "whitelist:-LT", "active": False})
    assert b"failure reason" not in announce(tracker, 4, pid=peer_id(4, b"-XX0001-"))


def test_passkey_path_form(tracker):
    target = (
        f"/{PK}/announce?info_hash={quote_from_bytes(IH)}&peer_id={quote_from_bytes(peer_id(1))}"
        "&port=6881&left=0"
    )
    status, body = tracker.handle(target.encode(), "127.0.0.2")
    assert bencode2.bdecode(body)[b"complete"] == 1


def test_stopped_from_an_unknown_peer_is_fine(tracker):
    reply = announce(tracker, 1, event="stopped")
    assert (reply[b"complete"], reply[b"incomplete"], reply[b"peers"]) == (0, 0, b"")


def test_stopped_removes_the_peer(tracker):
    announce(tracker, 1)
    announce(tracker, 2, event="stopped")
    announce(tracker, 1, event="stopped")
    assert compact_ports(announce(tracker, 3)) == []


def test_a_snatch_is_left_going_to_zero_counted_once(tracker, directory):
    announce(tracker, 1, left=100, event="started")
    announce(tracker, 1, left=0, downloaded=100)  # rtorrent: no `completed` event at all
    announce(tracker, 1, left=0, downloaded=100, event="completed")  # late: no second snatch
    announce(tracker, 2, left=0, event="completed")  # WebTorrent starting as a seeder: none
    assert directory.torrents[IH].snatches == 1
    assert tracker.swarms.drain().snatches == [(IH.hex(), 1)]


def test_transfer_deltas_accumulate_per_user(tracker):
    announce(tracker, 1, event="started", uploaded=0, downloaded=0)
    announce(tracker, 1, uploaded=100, downloaded=40)
    announce(tracker, 1, uploaded=150, downloaded=90, event="stopped")
    announce(tracker, 2, event="started", passkey=LEECHLESS_PK, left=0, uploaded=5)
    announce(tracker, 2, passkey=LEECHLESS_PK, left=0, uploaded=12)
    drained = tracker.swarms.drain()
    assert drained.transfers == {1: (150, 90), 2: (7, 0)}
    assert drained.stopped == {1}  # user 1's session is to be closed out
    assert tracker.swarms.drain().transfers == {}


def test_a_forgotten_peer_is_not_credited_twice(tracker):
    """After a crash the tracker may meet a peer mid-session: its counters are not new."""
    announce(tracker, 1, uploaded=500, downloaded=500)  # no `started`
    announce(tracker, 1, uploaded=600, downloaded=500)
    assert tracker.swarms.drain().transfers == {1: (100, 0)}


def test_a_restarted_client_counts_from_zero(tracker):
    announce(tracker, 1, event="started")
    announce(tracker, 1, uploaded=1000)
    announce(tracker, 1, uploaded=30)  # counters went down: a new client session
    assert tracker.swarms.drain().transfers == {1: (1030, 0)}


def scrape(tracker, *hashes, passkey=PK):
    query = "&".join([f"info_hash={quote_from_bytes(h)}" for h in hashes] + [f"passkey={passkey}"])
    status, body = tracker.handle(f"/scrape?{query}".encode(), "127.0.0.2")
    return bencode2.bdecode(body)


def test_scrape_reports_registered_torrents(tracker):
    announce(tracker, 1, left=100)
    announce(tracker, 1, left=0, downloaded=100)
    announce(tracker, 2, left=5)
    expected = {IH: {b"complete": 1, b"downloaded": 1, b"incomplete": 1}}
    assert scrape(tracker, IH, OTHER_IH) == {b"files": expected}
    assert b"full scrape is off" in scrape(tracker)[b"failure reason"]
    full = Tracker(
        dataclasses.replace(tracker.settings, full_scrape=True),
        tracker.directory,
        tracker.swarms,
        tracker.clock,
    )
    assert scrape(full) == {b"files": expected}  # no info_hash: every torrent
    assert b"unknown passkey" in scrape(tracker, IH, passkey="x" * 32)[b"failure reason"]


def test_stale_peers_are_reaped(tracker, clock):
    announce(tracker, 1)
    clock.now += 100
    announce(tracker, 2)
    assert tracker.swarms.reap(clock.now, max_age=50) == 1
    assert compact_ports(announce(tracker, 3)) == [6883]


def test_drained_swarms_restore_the_same_state(tracker, directory, clock):
    for n, left in ((1, 0), (2, 10), (3, 0)):
        announce(tracker, n, left=left, uploaded=n)
    announce(tracker, 4, ip="::1")
    docs = [{"_id": f"swarm:{ih}", **body} for ih, body in tracker.swarms.drain().swarms.items()]
    restored = Tracker(tracker.settings, directory, Swarms(), clock)
    assert restored.swarms.restore(docs, now=clock.now, max_age=60) == 4
    reply = announce(restored, 9)
    assert (reply[b"complete"], reply[b"incomplete"]) == (2, 3)
    assert compact_ports(reply) == [6882, 6883, 6884] and len(reply[b"peers6"]) == 18
    assert restored.swarms.drain().transfers == {}  # restoring credits nobody


def test_an_emptied_swarm_is_drained_as_gone(tracker):
    announce(tracker, 1)
    tracker.swarms.drain()
    announce(tracker, 1, event="stopped")
    assert tracker.swarms.drain().swarms == {IH.hex(): None}


def test_unknown_paths(tracker):
    assert tracker.handle(b"/favicon.ico", "127.0.0.1")[0] == 404
    assert tracker.handle(b"/", "127.0.0.1")[0] == 200


def test_re_announces_wait_for_a_full_drain_membership_changes_do_not(tracker):
    announce(tracker, 1, event="started")
    assert list(tracker.swarms.drain(full=False).swarms) == [IH.hex()]  # a peer joined
    announce(tracker, 1, uploaded=10)  # same peer, same state: only counters moved
    assert tracker.swarms.drain(full=False).swarms == {}
    full = tracker.swarms.drain(full=True).swarms[IH.hex()]
    assert full["peers"][peer_id(1).hex()]["uploaded"] == 10
    announce(tracker, 1, left=0)  # turned seeder: counts changed, stored at once
    assert tracker.swarms.drain(full=False).swarms[IH.hex()]["seeders"] == 1


@pytest.mark.parametrize(
    ("peer_id", "name"),
    [
        (b"-TR3000-au" + bytes(10), "-TR3000-"),
        (b"-LT2110-" + b"x" * 12, "-LT2110-"),
        (b"A2-1-36-0-" + bytes(10), "A2-1-36-0-"),
        (b"M7-2-0--" + b"\xff" * 12, "M7-2-0--"),
    ],
)
def test_client_names_leave_out_the_random_part(peer_id, name):
    from app.tracker.peers import client_name

    assert client_name(peer_id) == name


def test_a_stopping_peer_is_given_no_peers(tracker):
    announce(tracker, 1)
    announce(tracker, 2)
    assert announce(tracker, 2, event="stopped")[b"peers"] == b""


def test_a_peer_id_belongs_to_the_account_that_announced_it(tracker, directory):
    """Other members see peer ids in replies: they must not stop, move or take over a peer."""
    announce(tracker, 1, left=100, event="started", uploaded=0)
    thief = {"passkey": LEECHLESS_PK, "pid": peer_id(1)}
    for attempt in ({"event": "stopped"}, {"left": 0, "ip": "10.6.6.6", "uploaded": 999}):
        reply = announce(tracker, 7, **thief, **attempt)
        assert "peer id in use by another account" in reply[b"failure reason"].decode()
    assert directory.torrents[IH].snatches == 0
    assert tracker.swarms.drain().transfers == {}
    assert compact_ports(announce(tracker, 2)) == [6882]  # still there, at its address


def test_clients_per_account_and_swarm_are_capped(tracker):
    for n in range(30):
        assert b"failure reason" not in announce(tracker, n)
    refused = announce(tracker, 31)
    assert "too many clients of this account" in refused[b"failure reason"].decode()
    announce(tracker, 0, event="stopped")
    assert b"failure reason" not in announce(tracker, 31)


def test_a_dual_stack_client_is_one_peer_with_two_addresses(tracker, directory):
    announce(tracker, 1, left=100, event="started", ip="127.0.0.2")
    announce(tracker, 1, left=100, event="started", ip="::1")
    announce(tracker, 1, left=0, ip="127.0.0.2", uploaded=50, downloaded=100)
    announce(tracker, 1, left=0, ip="::1", uploaded=50, downloaded=100)
    reply = announce(tracker, 2)
    assert (reply[b"complete"], reply[b"incomplete"]) == (1, 1)
    assert compact_ports(reply) == [6882] and compact_ports(reply, b"peers6") == [6882]
    assert directory.torrents[IH].snatches == 1
    assert tracker.swarms.drain().transfers == {1: (50, 100)}


def test_a_stop_from_an_unknown_peer_leaves_nothing_behind(tracker):
    announce(tracker, 1, event="stopped")
    assert tracker.swarms.get(IH) is None
    assert tracker.swarms.drain().swarms == {}


# ---------------------------------------------------------------- what is credited (BEP 3)


def test_counters_sent_with_started_are_the_baseline_not_a_credit(tracker):
    """WebTorrent seeding announces `started` with the data it checked as `downloaded`."""
    announce(tracker, 1, left=0, event="started", downloaded=3940351, pid=peer_id(1, b"-WW0300-"))
    announce(tracker, 1, left=0, downloaded=3940351, uploaded=20, pid=peer_id(1, b"-WW0300-"))
    assert tracker.swarms.drain().transfers == {1: (20, 0)}


def test_a_started_from_a_known_peer_is_a_new_baseline(tracker):
    announce(tracker, 1, event="started")
    announce(tracker, 1, uploaded=100, downloaded=40)
    announce(tracker, 1, event="started", uploaded=500, downloaded=500)  # a new session
    announce(tracker, 1, uploaded=510, downloaded=520)
    assert tracker.swarms.drain().transfers == {1: (110, 60)}


def test_a_ctorrent_seeder_checking_its_files_is_no_snatch(tracker, directory):
    """ctorrent announces `started` with left > 0 before checking, then left=0, downloaded=0."""
    ctorrent = peer_id(1, b"-CD0303-")
    announce(tracker, 1, left=5000, event="started", pid=ctorrent)
    announce(tracker, 1, left=0, pid=ctorrent)
    announce(tracker, 1, left=0, event="completed", pid=ctorrent)
    assert directory.torrents[IH].snatches == 0
    drained = tracker.swarms.drain()
    assert (drained.snatches, drained.transfers) == ([], {})
    reply = announce(tracker, 2)
    assert (reply[b"complete"], reply[b"incomplete"]) == (1, 1)  # it does seed


def test_a_snatch_needs_download_credited_in_this_session(tracker, directory):
    announce(tracker, 1, left=100, event="started")
    announce(tracker, 1, left=60, downloaded=40)  # downloaded earlier, in this session
    announce(tracker, 1, left=60, event="started", downloaded=40)  # client restarted
    announce(tracker, 1, left=0, downloaded=40)  # finished with nothing downloaded since
    announce(tracker, 2, left=100, event="started")
    announce(tracker, 2, left=0, downloaded=100)
    assert directory.torrents[IH].snatches == 1
    assert tracker.swarms.drain().snatches == [(IH.hex(), 1)]


def test_counters_newer_than_the_stored_swarm_travel_with_the_drain(tracker, directory, clock):
    """A crash after they were written must not credit the same traffic again."""
    announce(tracker, 1, event="started")
    stored = [{"_id": f"swarm:{ih}", **b} for ih, b in tracker.swarms.drain().swarms.items()]
    announce(tracker, 1, uploaded=300, downloaded=100)  # only counters moved: no swarm written
    drained = tracker.swarms.drain(full=False)
    assert drained.swarms == {} and drained.transfers == {1: (300, 100)}
    key = f"{IH.hex()}/{peer_id(1).hex()}"
    assert drained.fresh == {1: {key: [300, 100, 100, clock.now]}}
    # the tracker crashes; it restarts from the stored swarm and the fresh counters
    restored = Tracker(tracker.settings, directory, Swarms(), clock)
    restored.swarms.restore(stored, now=clock.now, max_age=60, fresh=drained.fresh)
    announce(restored, 1, uploaded=350, downloaded=100)
    first = restored.swarms.drain(full=False)
    assert first.transfers == {1: (50, 0)}  # not 350 again
    assert IH.hex() in first.swarms and first.fresh == {1: {}}  # stored now: no longer needed
    assert first.swarms[IH.hex()]["peers"][peer_id(1).hex()]["uploaded"] == 350


def test_a_full_drain_stores_the_counters_and_forgets_them(tracker):
    announce(tracker, 1, event="started")
    tracker.swarms.drain()
    announce(tracker, 1, uploaded=10)
    assert list(tracker.swarms.drain(full=False).fresh[1]) == [f"{IH.hex()}/{peer_id(1).hex()}"]
    assert tracker.swarms.drain(full=True).fresh == {1: {}}
    assert tracker.swarms.drain(full=True).fresh == {}
