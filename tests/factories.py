"""Small factories with keyword overrides, and read-only helpers for assertions."""

from __future__ import annotations

from app.ids import normalize_key, stable_int_id
from app.queues import downloads
from app.queues.albums import album_doc_id, import_albums
from app.queues.downloads import TorrentRef
from app.store.commit import commit
from app.store.events import EVENT_PREFIX, append_event, event_log, new_event_id, site_of
from app.store.projections import comparable
from app.timeutil import iso

PTH = "passtheheadphones.me"


def album_id_for(artist, title):
    """The stable public id an album gets from its (artist, title)."""
    return stable_int_id(normalize_key(artist) + "\x1f" + normalize_key(title))


def make_albums(db, count=3, *, now, artist="Cockburn, Bruce", title="Album {i}", start_line=2):
    """Import `count` albums; return their public ids in import order."""
    rows = [(start_line + i, artist, title.format(i=i)) for i in range(count)]
    import_albums(db, rows, actor="test", now=now)
    return [album_id_for(a, t) for _, a, t in rows]


def make_download_task(db, torrent_id=37, *, now, host=PTH, album_ids=(1,)):
    """Create the download task for (host, torrent_id) as a found torrent would; return its id."""
    ref = TorrentRef(host, torrent_id)
    commit(db, downloads.creation_decisions({a: [ref] for a in album_ids}), actor="test", now=now)
    return downloads.task_doc_id(host, torrent_id)


def get_album(db, album_id):
    return db.get(album_doc_id(album_id))


def event_ids(db):
    """Every event document id in the log, in id (time) order."""
    return list(event_log(db).iter_ids(EVENT_PREFIX))


def all_changes(db):
    """Every change recorded in the log, as (aggregate, version, name), in log order."""
    changes = []
    for event in event_log(db).iter_prefix(EVENT_PREFIX):
        changes += [(c["aggregate"], c["version"], c["name"]) for c in event["changes"]]
    return changes


def db_snapshot(db):
    """Every document id with its revision, in the read model and the log: equal
    snapshots mean nothing was written."""
    snapshot = {}
    for database in (db, event_log(db)):
        rows = database.server.get_json(f"{database.path}/_all_docs")["rows"]
        snapshot.update({row["id"]: row["value"]["rev"] for row in rows})
    return snapshot


def read_model(db, *, leave_out=()):
    """Every document of a read model as a rebuild would make it (no _rev, no write
    time, no design document), less the ids in `leave_out`."""
    rows = db.server.get_json(f"{db.path}/_all_docs", include_docs=True)["rows"]
    return {
        row["id"]: comparable(row["doc"])
        for row in rows
        if not row["id"].startswith("_design/") and row["id"] not in leave_out
    }


def ids_of(albums):
    return [album["id"] for album in albums]


def append_change(db, aggregate, version, name, data, *, actor="test", now, site=None):
    """Write a one-change event straight to the log, as a crashed writer or another
    site would leave it: the read model does not see it until the projector runs."""
    site = site or site_of(db)
    event = {
        "_id": new_event_id(now, site),
        "type": "event",
        "name": name,
        "at": iso(now),
        "actor": actor,
        "site": site,
        "changes": [{"aggregate": aggregate, "version": version, "name": name, "data": data}],
    }
    append_event(db, event)
    return event
