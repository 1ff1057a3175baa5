"""The write-behind: hourly summaries, sessions closed out on stop, nothing lost or counted twice.

Users' totals are read as the API reads them (app.tracker.activity.current_user
and current_counts: projection plus what is not recorded yet), the facts with
read_events.
"""

import pytest
from tracker_process import free_port

from app.store.couch import CouchServer
from app.store.events import read_events
from app.tracker import accounts, activity, members, peersdb
from app.tracker.swarm import Flush
from app.tracker.writer import WriteBehind

IH = "cd" * 20
USER = accounts.tracker_user_doc_id(7)


@pytest.fixture
def peers_db(db, make_app):
    settings = make_app().extensions["distleech"].settings
    return peersdb.open_peers_database(db, settings)


@pytest.fixture
def member(db, clock):
    accounts.register_torrent(db, IH, 1, "Album", actor="test", now=clock())
    members.register_user(db, 7, name="bob", actor="test", now=clock())


def totals(db, peers_db):
    """What GET /api/user shows: uploaded, downloaded, snatches."""
    user = activity.current_user(db, peers_db, 7)
    return user["uploaded"], user["downloaded"], user["snatches"]


def recorded(db):
    """What the event log and the projection hold: the user's summaries and totals."""
    events = [e for e in read_events(db, USER) if e["name"] == "transferred"]
    user = members.get_tracker_user(db, 7)
    return events, (user["uploaded"], user["downloaded"], user["snatches"])


def snatch_count(db, peers_db):
    [row] = [r for r in activity.current_counts(db, peers_db) if r["info_hash"] == IH]
    return row["snatches"]


def test_traffic_is_summarised_once_per_user_and_hour(db, peers_db, member, clock):
    writer = WriteBehind(db, peers_db, clock=clock)
    for _second in range(100):  # a hundred flushes in which bob announced
        clock.advance(seconds=10)
        assert writer.write(Flush({}, {7: (3, 1)}, []))
    assert writer.write(Flush({}, {}, [(IH, 7)]))
    assert recorded(db)[0] == []  # nothing in the log yet...
    assert totals(db, peers_db) == (300, 100, 1)  # ...but the totals shown are current
    assert snatch_count(db, peers_db) == 1

    clock.advance(hours=1)  # the hour ended: the first flush after it records it
    assert writer.pending
    assert writer.write(Flush({}, {7: (5, 0)}, []))  # the new hour's traffic
    [summary], projected = recorded(db)
    assert projected == (300, 100, 1)
    assert summary["data"] | {"batch": "-"} == {
        "uploaded": 300,
        "downloaded": 100,
        "snatched": [IH],
        "batch": "-",
        "from": "2026-01-01T12:00:10.000000Z",
        "until": "2026-01-01T13:00:00.000000Z",
        "reason": "hour",
    }
    assert summary["actor"] == "tracker"
    [torrent] = [e for e in read_events(db, accounts.tracked_doc_id(IH)) if e["name"] == "snatched"]
    assert torrent["data"]["users"] == [7]
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == snatch_count(db, peers_db) == 1
    assert totals(db, peers_db) == (305, 100, 1)
    assert writer.write(Flush({}, {}, []))
    assert len(recorded(db)[0]) == 1  # nothing recorded twice


def test_a_stopped_client_closes_its_session_at_once(db, peers_db, member, clock):
    writer = WriteBehind(db, peers_db, clock=clock)
    writer.write(Flush({}, {7: (10, 20)}, []))
    clock.advance(seconds=5)
    writer.write(Flush({}, {7: (1, 2)}, [(IH, 7)], stopped={7}))  # its last counters with it
    [summary], projected = recorded(db)
    assert projected == (11, 22, 1) == totals(db, peers_db)
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 1  # the snatch's torrent too
    assert (summary["data"]["reason"], summary["data"]["until"]) == (
        "stopped",
        "2026-01-01T12:00:05.000000Z",
    )
    assert peersdb.get_swarm(peers_db, IH) is None
    assert peers_db.get_or_none(activity.activity_doc_id(USER)) is None  # nothing left open
    writer.write(Flush({}, {}, [], stopped={7}))  # a stop with no traffic records nothing
    assert len(recorded(db)[0]) == 1


def test_a_clean_shutdown_closes_every_tally(db, peers_db, member, clock):
    writer = WriteBehind(db, peers_db, clock=clock)
    writer.write(Flush({}, {7: (10, 20)}, [(IH, 7)]))
    assert writer.write(Flush({}, {7: (1, 0)}, []), final=True)
    assert not writer.pending
    [summary], projected = recorded(db)
    assert summary["data"]["reason"] == "shutdown" and projected == (11, 20, 1)
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 1
    assert list(peers_db.iter_prefix(activity.ACTIVITY_PREFIX)) == []


def test_a_failed_flush_is_written_later_and_only_once(db, peers_db, member, clock):
    down = CouchServer(f"http://127.0.0.1:{free_port()}", timeout=1).database(db.name)
    writer = WriteBehind(down, down, clock=clock)
    swarm = {"info_hash": IH, "seeders": 0, "leechers": 0, "peers": {}}

    assert not writer.write(Flush({IH: swarm}, {7: (10, 1)}, [(IH, 7)]))
    assert writer.pending
    writer.db, writer.peers_db = db, peers_db  # CouchDB is back
    assert writer.write(Flush({}, {7: (5, 0)}, []))
    assert totals(db, peers_db) == (15, 1, 1)
    assert peersdb.get_swarm(peers_db, IH)["info_hash"] == IH
    clock.advance(hours=1)
    assert writer.write(Flush({}, {}, []))
    assert writer.write(Flush({}, {}, []))  # nothing left: nothing recorded twice
    events, projected = recorded(db)
    assert len(events) == 1 and projected == (15, 1, 1) == totals(db, peers_db)
    assert not writer.pending


def test_a_summary_that_landed_unseen_is_not_recorded_again_after_a_crash(
    db, peers_db, member, clock
):
    """The event went in but the tracker never heard so, then crashed: a new one carries on."""
    log_down = CouchServer(f"http://127.0.0.1:{free_port()}", timeout=1).database(db.name)
    writer = WriteBehind(log_down, peers_db, clock=clock)
    writer.write(Flush({}, {7: (100, 50)}, [(IH, 7)]))
    clock.advance(hours=1)
    assert not writer.write(Flush({}, {7: (1, 0)}, []))  # the closing tally is stored first...
    [doc] = [d for d in peers_db.iter_prefix(activity.ACTIVITY_PREFIX) if d["aggregate"] == USER]
    closing = doc["closing"]
    activity.record_summaries(db, {USER: closing}, now=clock())  # ...and its event landed
    assert totals(db, peers_db) == (101, 50, 1)  # the reader counts it once already

    restarted = WriteBehind(db, peers_db, clock=clock)
    stored = list(peers_db.iter_prefix(activity.ACTIVITY_PREFIX))
    restarted.restore(stored)
    assert restarted.unrecorded_snatches() == {IH: 1}  # the torrent's summary is still due
    assert restarted.write(Flush({}, {7: (0, 9)}, []), final=True)
    events, projected = recorded(db)
    assert len(events) == 2 and projected == (101, 59, 1) == totals(db, peers_db)
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 1


def test_tallies_of_deleted_users_close_without_a_trace(db, peers_db, member, clock):
    writer = WriteBehind(db, peers_db, clock=clock)
    writer.write(Flush({}, {7: (10, 20)}, []))
    members.delete_user(db, 7, actor="test", now=clock())
    assert writer.write(Flush({}, {}, [], stopped={7}))
    assert [e["name"] for e in read_events(db, USER)] == ["registered", "deleted"]
    assert not writer.pending and list(peers_db.iter_prefix(activity.ACTIVITY_PREFIX)) == []
