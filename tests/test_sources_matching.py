"""A synchronised source's files are matched against the torrent registry like ingest listings."""

from __future__ import annotations

from factories import PTH, db_snapshot, make_download_task
from torrent_factories import (
    app,  # noqa: F401  (the app with the torrents blueprint)
    info_hash_of,
    make_torrent,
    upload_file,
    write_files,
)

from app.queues.downloads import task_doc_id
from app.sources.matching import content_listing_path
from app.store.events import EVENT_PREFIX, event_log

SHA = "cd" * 32
SOURCE = {
    "id": "portraits",
    "url": "https://example.org/c/1",
    "content_path": "galleries/portraits",
}
ALBUM = {"01 - Intro.flac": 40_000, "02 - Song.flac": 30_000, "Scans/cover.jpg": 5_000}
ACTOR = "source:portraits"


def register(client, db, headers, clock, root, torrent_id):
    """Create the download task and upload the .torrent over root; return the info hash."""
    make_download_task(db, torrent_id, now=clock(), host=PTH)
    data = make_torrent(root)
    response = upload_file(client, headers, data, site=PTH, torrent_id=torrent_id)
    assert response.status_code == 201, response.get_json()
    return info_hash_of(data)


def sync_round(client, admin_auth, worker, layout, *, status="synchronised"):
    """Order a sync, lease it, report `layout` {filename: size} and end it; return the answer."""
    ordered = client.post("/api/sources/portraits/sync", headers=admin_auth)
    assert ordered.status_code == 202, ordered.get_json()
    leased = client.get("/api/sources/next", headers=worker)
    assert leased.status_code == 200, leased.get_data(as_text=True)
    order = leased.get_json()["order"]
    entries = [
        {"filename": name, "status": "downloaded", "size": size, "sha256": SHA}
        for name, size in layout.items()
    ]
    posted = client.post(
        "/api/sources/portraits/files", json={"order": order, "files": entries}, headers=worker
    )
    assert posted.status_code == 200, posted.get_json()
    return finish(client, worker, order, status)


def finish(client, worker, order, status="synchronised"):
    body = {"order": order, "status": status}
    if status == "failed":
        body["reason"] = "gallery-dl failed"
    answer = client.post("/api/sources/portraits/synchronised", json=body, headers=worker)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def lookup(client, worker, info_hash):
    response = client.get(f"/api/torrents/{info_hash}", headers=worker)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def source_events(db):
    return [e for e in event_log(db).iter_prefix(EVENT_PREFIX) if e["actor"] == ACTOR]


def sized(layout, prefix=""):
    return {f"{prefix}{name}": size for name, size in layout.items()}


def test_synchronised_files_locate_the_torrent(client, db, clock, admin_auth, worker, tmp_path):
    album = register(client, db, worker, clock, write_files(tmp_path / "Artist - Album", ALBUM), 37)
    loose_file = write_files(tmp_path / "single", {"Live.flac": 20_000}) / "Live.flac"
    loose = register(client, db, worker, clock, loose_file, 38)
    assert client.post("/api/sources", json=SOURCE, headers=admin_auth).status_code == 201
    layout = {**sized(ALBUM, "Artist - Album/"), "Live.flac": 20_000, "notes.txt": 7}
    answer = sync_round(client, admin_auth, worker, layout)
    assert answer["state"] == "synchronised"
    assert answer["ingest"] == {"listings": 3, "matched": 2, "recorded": 2, "truncated": False}

    found = lookup(client, worker, album)
    assert found["state"] == "located"
    album_path = "content:/galleries/portraits/Artist - Album"
    assert album_path == content_listing_path("galleries/portraits/Artist - Album")
    assert (found["location"]["path"], found["location"]["kind"]) == (album_path, "directory")
    local = {f["path"]: f["local_path"] for f in found["files"]}
    assert local["Scans/cover.jpg"] == f"{album_path}/Scans/cover.jpg"
    single = lookup(client, worker, loose)["location"]
    assert (single["path"], single["kind"]) == ("content:/galleries/portraits/Live.flac", "file")
    task = db.get(task_doc_id(PTH, 37))
    assert (task["state"], task["path"], task["info_hash"]) == ("done", album_path, album)
    names = {name for e in source_events(db) for name in e["name"].split("+")}
    assert names == {"located", "filled"}  # recorded as the source

    # a retried request, then the next round reporting the same files: nothing more is recorded
    before = db_snapshot(db)
    again = finish(client, worker, answer["order"])
    assert again["recorded"] is False and again["ingest"]["recorded"] == 0
    assert db_snapshot(db) == before
    events = source_events(db)
    second = sync_round(client, admin_auth, worker, layout)
    assert second["ingest"] == {"listings": 3, "matched": 2, "recorded": 0, "truncated": False}
    assert source_events(db) == events
    assert lookup(client, worker, album)["location"] == found["location"]


def test_files_that_do_not_match_leave_torrents_alone(
    client, db, clock, admin_auth, worker, tmp_path
):
    info_hash = register(client, db, worker, clock, write_files(tmp_path / "Album", ALBUM), 37)
    assert client.post("/api/sources", json=SOURCE, headers=admin_auth).status_code == 201
    layout = sized(ALBUM, "Album/") | {"Album/02 - Song.flac": 29_999}  # one byte short
    answer = sync_round(client, admin_auth, worker, layout)
    assert answer["ingest"] == {"listings": 1, "matched": 0, "recorded": 0, "truncated": False}
    assert lookup(client, worker, info_hash)["location"] is None
    assert db.get(task_doc_id(PTH, 37))["state"] != "done"
    assert source_events(db) == []


def test_a_failed_sync_matches_nothing(client, db, clock, admin_auth, worker, tmp_path):
    info_hash = register(client, db, worker, clock, write_files(tmp_path / "Album", ALBUM), 37)
    assert client.post("/api/sources", json=SOURCE, headers=admin_auth).status_code == 201
    answer = sync_round(client, admin_auth, worker, sized(ALBUM, "Album/"), status="failed")
    assert "ingest" not in answer
    assert lookup(client, worker, info_hash)["location"] is None


def test_a_torrent_found_on_the_content_root_is_counted_once_under_it(
    client, db, clock, admin_auth, worker, tmp_path
):
    """Its files are the source's files: no ingest volume appears for it, no bytes twice."""
    from app.storage.status import snapshot_storage

    info_hash = register(
        client, db, worker, clock, write_files(tmp_path / "Artist - Album", ALBUM), 37
    )
    assert client.post("/api/sources", json=SOURCE, headers=admin_auth).status_code == 201
    sync_round(client, admin_auth, worker, sized(ALBUM, "Artist - Album/"))
    assert lookup(client, worker, info_hash)["location"]["path"].startswith("content:/")
    roots = snapshot_storage(db, clock(), force=True)["roots"]
    assert [r["name"] for r in roots if r["kind"] == "ingest"] == []
    [content] = [r for r in roots if r["kind"] == "content"]
    assert (content["files"], content["bytes"]) == (len(ALBUM), sum(ALBUM.values()))
