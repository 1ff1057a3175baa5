"""Small factories with keyword overrides, and read-only helpers for assertions."""

from __future__ import annotations

from app import downloads
from app.albums import album_doc_id, import_albums
from app.downloads import TorrentRef
from app.events import EVENT_PREFIX, commit
from app.ids import normalize_key, stable_int_id

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
    """Every event document id, in id order."""
    rows = db.server.get_json(
        f"{db.path}/_all_docs", startkey=EVENT_PREFIX, endkey=EVENT_PREFIX + "\ufff0"
    )["rows"]
    return [row["id"] for row in rows]


def db_snapshot(db):
    """Every document id with its revision: equal snapshots mean nothing was written."""
    rows = db.server.get_json(f"{db.path}/_all_docs")["rows"]
    return {row["id"]: row["value"]["rev"] for row in rows}


def ids_of(albums):
    return [album["id"] for album in albums]
