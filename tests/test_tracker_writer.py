"""The write-behind keeps what CouchDB could not take, and writes it once CouchDB is back."""

from tracker_process import free_port

from app.couch import CouchServer
from app.tracker import accounts, peersdb
from app.tracker.swarm import Flush
from app.tracker.writer import WriteBehind

IH = "cd" * 20


def test_a_failed_flush_is_written_later_and_only_once(db, make_app, clock):
    settings = make_app().extensions["distleech"].settings
    peers_db = peersdb.open_peers_database(db, settings)
    accounts.register_torrent(db, IH, 1, "Album", actor="test", now=clock())
    accounts.register_user(db, 7, name="bob", actor="test", now=clock())
    down = CouchServer(f"http://127.0.0.1:{free_port()}", timeout=1).database(db.name)
    writer = WriteBehind(down, down, clock=clock)
    swarm = {"info_hash": IH, "seeders": 0, "leechers": 0, "peers": {}}

    assert not writer.write(Flush({IH: swarm}, {7: (10, 1)}, [(IH, 7)]))
    assert writer.pending
    writer.db, writer.peers_db = db, peers_db  # CouchDB is back
    assert writer.write(Flush({}, {7: (5, 0)}, []))
    assert writer.write(Flush({}, {}, []))  # nothing left: nothing recorded twice

    user = accounts.get_tracker_user(db, 7)
    assert (user["uploaded"], user["downloaded"], user["snatches"]) == (15, 1, 1)
    assert accounts.get_tracked_torrent(db, IH)["snatches"] == 1
    assert peersdb.get_swarm(peers_db, IH)["info_hash"] == IH
    assert not writer.pending
