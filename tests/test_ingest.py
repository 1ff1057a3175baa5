"""Ingest matching (POST /api/ingest) and the scanner (`ingest scan`), on the real server."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest
from click.testing import CliRunner
from factories import PTH, db_snapshot, event_ids, make_albums, make_download_task
from hypothesis import given, settings
from hypothesis import strategies as st
from torrent_factories import (
    app,  # noqa: F401  (the app with the torrents blueprint)
    gazelle,
    info_hash_of,
    listing_of,
    make_torrent,
    server_url,  # noqa: F401
    sizes_of,
    upload_file,
    upload_gazelle,
    write_files,
)

from app.ingest.parse import LISTING_VALIDATOR, is_plainly_valid
from app.queues.downloads import task_doc_id
from app.registry.keys import torrent_doc_id
from app.store.projections import rebuild_projections
from worker.scanner import ingest as ingest_group

OPS = "orpheus.network"


def send(client, headers, listing):
    response = client.post("/api/ingest", json=listing, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def register(client, db, headers, clock, root, torrent_id, *, site=PTH, **kwargs):
    """Create the download task, upload the .torrent over root; return the info hash."""
    make_download_task(db, torrent_id, now=clock(), host=site)
    data = make_torrent(root, **kwargs)
    response = upload_file(client, headers, data, site=site, torrent_id=torrent_id)
    assert response.status_code == 201, response.get_json()
    return info_hash_of(data)


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "ingest"
    path.mkdir()
    return path


ALBUM = {"01 - Intro.flac": 40_000, "02 - Song.flac": 30_000, "Scans/cover.jpg": 5_000}


# ---------------------------------------------------------------- outcomes


def test_a_complete_directory_fills_its_task(client, db, worker, clock, volume):
    root = write_files(volume / "Artist - Album", ALBUM)
    info_hash = register(client, db, worker, clock, root, 37)
    write_files(root, {"notes.txt": 10})  # an extra file the torrent does not have
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "matched"
    [match] = report["matched"]
    assert match["info_hash"] == info_hash
    assert match["location"] == "recorded"
    assert match["tasks"] == [{"site": PTH, "torrentId": 37, "status": "filled"}]
    assert report["extra_files"] == {"count": 1, "paths": ["notes.txt"]}
    task = db.get(task_doc_id(PTH, 37))
    assert (task["state"], task["path"], task["info_hash"]) == ("done", str(root), info_hash)
    torrent = db.get(torrent_doc_id(info_hash))
    assert torrent["state"] == "located"
    assert torrent["location"]["path"] == str(root)
    assert torrent["location"]["verified"] is None


def test_one_file_of_the_wrong_size_is_no_match(client, db, worker, clock, volume):
    """The original client compared only the last file's size: this must not match."""
    root = write_files(volume / "Artist - Album", ALBUM)
    info_hash = register(client, db, worker, clock, root, 37)
    write_files(root, {"01 - Intro.flac": 39_999})  # the first file, one byte short
    before, events = db_snapshot(db), event_ids(db)
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "no_match"
    assert report["matched"] == []
    [rejected] = report["rejected"]
    assert rejected["info_hash"] == info_hash
    assert (rejected["missing"], rejected["wrong_size"]) == (0, 1)
    assert rejected["reasons"] == [
        {"problem": "wrong_size", "file": "01 - Intro.flac", "expected": 40_000, "found": 39_999}
    ]
    assert db.get(task_doc_id(PTH, 37))["state"] == "ready"
    assert (db_snapshot(db), event_ids(db)) == (before, events)


def test_a_missing_file_is_no_match(client, db, worker, clock, volume):
    root = write_files(volume / "Artist - Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    (root / "Scans" / "cover.jpg").unlink()
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "no_match"
    assert report["rejected"][0]["reasons"] == [{"problem": "missing", "file": "Scans/cover.jpg"}]


def test_two_torrents_with_the_same_directory_name_are_told_apart_by_files(
    client, db, worker, clock, tmp_path, volume
):
    cd = write_files(tmp_path / "cd" / "Artist - Album", ALBUM)
    web = write_files(tmp_path / "web" / "Artist - Album", {"01 - Intro.flac": 41_000}, seed=2)
    cd_hash = register(client, db, worker, clock, cd, 1)
    web_hash = register(client, db, worker, clock, web, 2)
    landed = volume / "Artist - Album"
    shutil.copytree(web, landed)
    report = send(client, worker, listing_of(landed))
    assert report["outcome"] == "matched"
    assert [m["info_hash"] for m in report["matched"]] == [web_hash]
    [rejected] = report["rejected"]  # the same-named one, found by its name
    assert rejected["info_hash"] == cd_hash
    assert rejected["missing"] + rejected["wrong_size"] == 3
    assert db.get(task_doc_id(PTH, 2))["state"] == "done"
    assert db.get(task_doc_id(PTH, 1))["state"] == "ready"


def test_identical_file_lists_are_several_matches_and_all_recorded(
    client, db, worker, clock, tmp_path, volume
):
    root = write_files(volume / "Album", {"a.flac": 70_000})
    first = register(client, db, worker, clock, root, 1)
    second = register(client, db, worker, clock, root, 9, site=OPS, private=False)
    assert first != second  # a cross-seed: same files, another info dictionary
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "several_matched"
    assert sorted(m["info_hash"] for m in report["matched"]) == sorted([first, second])
    assert db.get(task_doc_id(PTH, 1))["state"] == db.get(task_doc_id(OPS, 9))["state"] == "done"


def test_a_cross_seed_registered_after_a_scan_is_found_by_the_next_scan(
    client, db, worker, clock, volume
):
    """The matcher reads its views stale; a torrent registered since the last scan
    must still be found (registration refreshes the matching index), even when
    another torrent already matches the same directory."""
    root = write_files(volume / "Album", {"a.flac": 70_000})
    first = register(client, db, worker, clock, root, 1)
    assert send(client, worker, listing_of(root))["outcome"] == "matched"
    second = register(client, db, worker, clock, root, 9, site=OPS, private=False)
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "several_matched"
    assert sorted(m["info_hash"] for m in report["matched"]) == sorted([first, second])
    assert db.get(task_doc_id(OPS, 9))["state"] == "done"


def test_a_loose_file_matches_a_single_file_torrent(client, db, worker, clock, volume):
    path = write_files(volume, {"Lonely Song.flac": 50_000}) / "Lonely Song.flac"
    info_hash = register(client, db, worker, clock, path, 8)
    listing = {
        "path": str(path),
        "kind": "file",
        "files": [{"path": "Lonely Song.flac", "size": 50_000}],
    }
    report = send(client, worker, listing)
    assert report["outcome"] == "matched"
    reseed = client.get(f"/api/torrents/{info_hash}", headers=worker).get_json()
    assert reseed["location"]["kind"] == "file"
    assert [f["local_path"] for f in reseed["files"]] == [str(path)]


def test_a_loose_file_never_matches_a_directory_torrent(client, db, worker, clock, volume):
    root = write_files(volume / "Single", {"only.flac": 20_000})
    register(client, db, worker, clock, root, 3)
    loose = volume / "only.flac"
    shutil.copy(root / "only.flac", loose)
    listing = {"path": str(loose), "kind": "file", "files": [{"path": "only.flac", "size": 20_000}]}
    report = send(client, worker, listing)
    assert report["outcome"] == "no_match"
    assert report["rejected"][0]["reasons"] == [{"problem": "expects_directory"}]


def test_gazelle_names_match_files_on_disk(client, db, worker, clock, volume):
    """HTML-escaped names, NFD names (macOS), other case, an empty file: all found."""
    files = {
        "01 - Björk & Sigur Rós.flac": 30_000,
        "02 - Don't Stop.flac": 20_000,
        "03 - Ωmega.flac": 10_000,
        "empty.txt": b"",
    }
    gazelle_files = [(name, size if isinstance(size, int) else 0) for name, size in files.items()]
    make_download_task(db, 55, now=clock())
    top = "Björk & Sigur Rós - Split (2001)"
    body = gazelle(55, gazelle_files, top=top, info_hash="ee" * 20)
    assert upload_gazelle(client, worker, PTH, body).status_code == 201
    on_disk = {unicodedata.normalize("NFD", name).upper(): size for name, size in files.items()}
    root = write_files(volume / unicodedata.normalize("NFD", top), on_disk)
    report = send(client, worker, listing_of(root))
    assert report["outcome"] == "matched", report
    reseed = client.get(f"/api/torrents/{'ee' * 20}", headers=worker).get_json()
    local = sorted(f["local_path"] for f in reseed["files"])
    assert local == sorted(str(root / name) for name in on_disk)
    # without the empty file it is not all there
    (root / "EMPTY.TXT").unlink()
    missing = send(client, worker, listing_of(root))
    assert missing["outcome"] == "no_match"
    assert missing["rejected"][0]["reasons"] == [{"problem": "missing", "file": "empty.txt"}]


def test_an_unavailable_torrent_is_located_but_its_task_stays_cancelled(
    client, db, worker, clock, volume
):
    root = write_files(volume / "Album", ALBUM)
    info_hash = register(client, db, worker, clock, root, 37)
    client.post(f"/api/torrents/{info_hash}/unavailable", headers=worker)
    report = send(client, worker, listing_of(root))
    assert report["matched"][0]["tasks"] == [{"site": PTH, "torrentId": 37, "status": "cancelled"}]
    assert report["matched"][0]["unavailable"] is True
    assert db.get(task_doc_id(PTH, 37))["state"] == "cancelled"
    assert db.get(torrent_doc_id(info_hash))["location"]["path"] == str(root)


def test_nothing_known_is_no_match_with_a_reason(client, db, worker, volume):
    root = write_files(volume / "Unknown", {"x.flac": 100})
    before = db_snapshot(db)
    report = send(client, worker, listing_of(root))
    assert (report["outcome"], report["rejected"]) == ("no_match", [])
    assert "No registered torrent" in report["reason"]
    assert db_snapshot(db) == before


# ---------------------------------------------------------------- idempotence and moves


def test_rescanning_changes_nothing_and_a_move_updates_the_location(
    client, db, worker, clock, volume, tmp_path
):
    root = write_files(volume / "Album", ALBUM)
    info_hash = register(client, db, worker, clock, root, 37)
    send(client, worker, listing_of(root))
    before = db_snapshot(db)
    again = send(client, worker, listing_of(root))
    assert again["matched"][0]["location"] == "unchanged"
    assert again["matched"][0]["tasks"][0]["status"] == "already_filled"
    assert db_snapshot(db) == before
    # the directory moves to the archive volume
    archive = tmp_path / "archive" / "Album (moved)"
    archive.parent.mkdir()
    root.rename(archive)
    moved = send(client, worker, listing_of(archive))
    assert moved["matched"][0]["location"] == "recorded"
    assert moved["matched"][0]["tasks"][0]["status"] == "filled"
    assert db.get(task_doc_id(PTH, 37))["path"] == str(archive)
    reseed = client.get(f"/api/torrents/{info_hash}", headers=worker).get_json()
    assert reseed["location"]["path"] == str(archive)
    assert sorted(f["local_path"] for f in reseed["files"]) == sorted(
        str(archive / p) for p in ALBUM
    )
    assert all((archive / p).exists() for p in ALBUM)
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_dry_run_records_nothing(client, db, worker, clock, volume):
    root = write_files(volume / "Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    before = db_snapshot(db)
    report = send(client, worker, listing_of(root, dry_run=True))
    assert report["dry_run"] is True
    assert report["matched"][0]["location"] == "would_record"
    assert report["matched"][0]["tasks"][0]["status"] == "would_fill"
    assert db_snapshot(db) == before


# ---------------------------------------------------------------- bad listings


GOOD = {"path": "/ingest/A", "files": [{"path": "a.flac", "size": 1}]}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"files": GOOD["files"]},
        {"path": "/ingest/A"},
        {"path": "relative/A", "files": GOOD["files"]},
        {"path": "/ingest/A", "files": []},
        {"path": 5, "files": GOOD["files"]},
        {"path": "/ingest/A", "files": [{"path": "a.flac", "size": -1}]},
        {"path": "/ingest/A", "files": [{"path": "a.flac", "size": True}]},
        {"path": "/ingest/A", "files": [{"path": "a.flac", "size": "1"}]},
        {"path": "/ingest/A", "files": [{"path": "a.flac"}]},
        {"path": "/ingest/A", "files": [{"path": "/etc/passwd", "size": 1}]},
        {"path": "/ingest/A", "files": [{"path": "../a.flac", "size": 1}]},
        {"path": "/ingest/A", "files": [{"path": "b//a.flac", "size": 1}]},
        {"path": "/ingest/A", "files": [{"path": "a", "size": 1}, {"path": "a", "size": 2}]},
        {**GOOD, "kind": "folder"},
        {**GOOD, "kind": "file"},  # a loose file's one entry is its own name
        {**GOOD, "verified": {"nothex": {"status": "verified"}}},
        {**GOOD, "verified": {"ab" * 20: {"status": "failed"}}},  # failed needs its piece
        {**GOOD, "verified": {"ab" * 20: {"status": "great"}}},
        {**GOOD, "dry_run": "yes"},
        {**GOOD, "surprise": 1},
        [GOOD],
    ],
)
def test_bad_listings_are_refused_and_change_nothing(client, db, worker, body):
    before = db_snapshot(db)
    response = client.post("/api/ingest", json=body, headers=worker)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_listing"
    assert db_snapshot(db) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("", "application/json", 400, "invalid_json"),
        ("{", "application/json", 400, "invalid_json"),
        ("path=/a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("<x/>", "application/xml", 415, "unsupported_media_type"),
    ],
)
def test_bodies_that_are_not_json(client, worker, data, content_type, status, code):
    response = client.post("/api/ingest", data=data, content_type=content_type, headers=worker)
    assert (response.status_code, response.get_json()["error"]) == (status, code)


# ---------------------------------------------------------------- the scanner


def run_scan(url, token, *args):
    runner = CliRunner()
    return runner.invoke(ingest_group, ["scan", *map(str, args), "--server", url, "--token", token])


def test_scan_sends_each_directory_and_loose_file(
    client,
    db,
    worker,
    worker_token,
    clock,
    server_url,  # noqa: F811
    volume,
    tmp_path,
):
    album = write_files(volume / "Artist - Album", ALBUM)
    album_hash = register(client, db, worker, clock, album, 37)
    single = write_files(volume, {"Lonely Song.flac": 50_000}) / "Lonely Song.flac"
    register(client, db, worker, clock, single, 8)
    wrong = write_files(volume / "Wrong Size", {"a.flac": 10_000})
    register(client, db, worker, clock, wrong, 9)
    write_files(wrong, {"a.flac": 9_000})
    write_files(volume / ".Trash-0", {"old.flac": 5})  # hidden: not a download
    write_files(volume / "Downloading", {"a.flac": 5})
    (volume / "Downloading.aria2").write_bytes(b"control")  # aria2 has not finished it
    write_files(volume / "Partial", {"a.flac.part": 5})
    result = run_scan(server_url, worker_token, volume)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("matched") and "Artist - Album" in line for line in lines)
    assert any(line.startswith("matched") and "Lonely Song.flac" in line for line in lines)
    assert any(line.startswith("no match") and "Wrong Size" in line for line in lines)
    assert any("is 9000 bytes, not 10000" in line for line in lines)
    assert sum(line.startswith("skipped") for line in lines) == 2
    assert "5 entries" in result.output  # the summary goes to stderr, mixed in here
    assert db.get(task_doc_id(PTH, 37))["path"] == str(album)
    assert db.get(task_doc_id(PTH, 8))["path"] == str(single)
    assert db.get(task_doc_id(PTH, 9))["state"] == "ready"
    assert db.get(torrent_doc_id(album_hash))["location"]["path"] == str(album)
    # scanning the same volume again writes nothing
    before = db_snapshot(db)
    again = run_scan(server_url, worker_token, volume, "--json", "--jobs", "1")
    assert again.exit_code == 0, again.output
    reports = [json.loads(line) for line in again.output.splitlines() if line.startswith("{")]
    assert len(reports) == 5
    assert db_snapshot(db) == before


def test_scan_reports_refusals_and_an_unreachable_server(worker_token, server_url, volume):  # noqa: F811
    write_files(volume / "A", {"a.flac": 5})
    refused = run_scan(server_url, "not-a-token", volume)
    assert refused.exit_code == 1
    assert "invalid_credentials" in refused.output
    unreachable = run_scan("http://127.0.0.1:9", worker_token, volume)
    assert unreachable.exit_code == 1
    assert "cannot reach" in unreachable.output


def test_full_loop_to_the_reseed_lookup(
    client,
    db,
    worker,
    worker_token,
    clock,
    server_url,  # noqa: F811
    volume,
    tmp_path,
):
    """Found torrent -> task -> .torrent uploaded -> files land -> scan -> filled -> reseed."""
    [album_id] = make_albums(db, 1, now=clock())
    assert client.get("/metadata/1", headers=worker).get_json()["albums"][0]["id"] == album_id
    found = {str(album_id): [{"site": f"https://{PTH}/", "torrentId": 77}]}
    assert client.post("/metadata/submit", json=found, headers=worker).status_code == 200
    leased = client.post("/torrents", data={"site": PTH, "rows": "1"}, headers=worker).get_json()
    assert [t["siteTorrentId"] for t in leased["torrents"]] == [77]
    seed = write_files(tmp_path / "seedbox" / "Artist - Album", ALBUM)
    data = make_torrent(seed)
    upload_file(client, worker, data, site=PTH, torrent_id=77)
    shutil.copytree(seed, volume / "Artist - Album")
    assert run_scan(server_url, worker_token, volume).exit_code == 0
    task = db.get(task_doc_id(PTH, 77))
    assert (task["state"], task["path"]) == ("done", str(volume / "Artist - Album"))
    reseed = client.get(f"/api/torrents/by-site/{PTH}/77", headers=worker).get_json()
    assert reseed["info_hash"] == info_hash_of(data)
    assert sorted((f["path"], f["size"]) for f in reseed["files"]) == sizes_of(seed)
    assert all(f["local_path"].startswith(str(volume)) for f in reseed["files"])


# ---------------------------------------------------------------- the fast check agrees


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "/a", "a", "file"])
)
file_items = st.dictionaries(
    st.sampled_from(["path", "size", "x"]), st.one_of(scalars, st.text(max_size=3)), max_size=3
)
bodies = st.dictionaries(
    st.sampled_from(["path", "kind", "files", "dry_run", "verified", "x"]),
    st.one_of(scalars, st.lists(st.one_of(file_items, scalars), max_size=3)),
    max_size=5,
)


@given(bodies)
@settings(max_examples=400)
def test_the_fast_check_accepts_only_what_the_schema_accepts(body):
    if is_plainly_valid(body):
        assert list(LISTING_VALIDATOR.iter_errors(body)) == []
