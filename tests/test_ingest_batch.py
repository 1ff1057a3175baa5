"""Batches of ingest listings (POST /api/ingest {"listings": [...]}) and the batching scanner,
on the real server."""

from __future__ import annotations

import io
import json
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import token_header
from factories import PTH, all_changes, db_snapshot, make_download_task
from torrent_factories import (
    info_hash_of,
    listing_of,
    make_torrent,
    server_url,  # noqa: F401
    upload_file,
    write_files,
)
from werkzeug.serving import make_server

from app import create_app
from app.accounts.auth import issue_token
from app.ingest.parse import MAX_BATCH_FILES, MAX_BATCH_LISTINGS
from app.queues.downloads import task_doc_id
from app.registry.keys import torrent_doc_id
from app.store.events import EVENT_PREFIX, changes_of, event_log
from app.store.projections import rebuild_projections, strip_bookkeeping
from app.store.setup import init_database
from worker.scanner import Coordinator, Scanner, batches
from worker.scanner import ingest as ingest_group
from worker.volume import Entry

OPS = "orpheus.network"
ALBUM = {"01 - Intro.flac": 40_000, "02 - Song.flac": 30_000, "Scans/cover.jpg": 5_000}


def send_batch(client, headers, listings):
    response = client.post("/api/ingest", json={"listings": listings}, headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert list(body) == ["reports"]
    assert len(body["reports"]) == len(listings)
    return body["reports"]


def send_one(client, headers, listing):
    response = client.post("/api/ingest", json=listing, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def register(client, db, headers, clock, root, torrent_id, *, site=PTH, data=None, **kwargs):
    """Create the download task, upload the .torrent over root; return the info hash."""
    make_download_task(db, torrent_id, now=clock(), host=site)
    data = data if data is not None else make_torrent(root, **kwargs)
    response = upload_file(client, headers, data, site=site, torrent_id=torrent_id)
    assert response.status_code == 201, response.get_json()
    return info_hash_of(data)


def projections(db):
    """Every torrent and download task projection, without revisions."""
    rows = db.server.get_json(f"{db.path}/_all_docs", include_docs=True)["rows"]
    docs = [row["doc"] for row in rows if row["id"].startswith(("torrent:", "dltask:"))]
    return {doc["_id"]: strip_bookkeeping(doc) | {"version": doc["version"]} for doc in docs}


def events_of(db):
    """The changes to torrents, download tasks and albums (not tokens), per aggregate in
    version order, without the ids of the events that hold them."""
    changes = []
    for event in event_log(db).iter_prefix(EVENT_PREFIX):
        for change in changes_of(event):
            if change["aggregate"].startswith(("torrent:", "dltask:", "album:")):
                change.pop("event")
                changes.append(change)
    return sorted(changes, key=lambda c: (c["aggregate"], c["version"]))


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "ingest"
    path.mkdir()
    return path


@pytest.fixture
def twin(couch_server, clock):
    """A second database and app, to replay the same scenario one listing at a time."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    database = couch_server.create_database(name)
    init_database(database, warm=False)
    application = create_app(
        {
            "couchdb": {"url": database.server_url, "database": database.name},
            "scheduler": {"enabled": False},
        },
        clock=clock,
    )
    token = issue_token(database, "worker-1", "worker", actor="test", now=clock())
    yield database, application.test_client(), token_header(token)
    couch_server.delete_database(name)


# ---------------------------------------------------------------- shapes and equivalence


def test_a_batch_answers_one_report_per_listing_in_order(client, db, worker, clock, volume):
    album = write_files(volume / "Artist - Album", ALBUM)
    info_hash = register(client, db, worker, clock, album, 37)
    unknown = write_files(volume / "Unknown", {"x.flac": 100})
    reports = send_batch(client, worker, [listing_of(unknown), listing_of(album)])
    assert [r["path"] for r in reports] == [str(unknown), str(album)]
    assert [r["outcome"] for r in reports] == ["no_match", "matched"]
    assert reports[1]["matched"][0]["info_hash"] == info_hash
    assert reports[1]["matched"][0]["tasks"] == [{"site": PTH, "torrentId": 37, "status": "filled"}]
    # each report has exactly the shape of a single listing's report
    single = send_one(client, worker, listing_of(album))
    assert [set(r) for r in reports] == [set(single)] * 2
    assert single["matched"][0]["location"] == "unchanged"
    assert db.get(task_doc_id(PTH, 37))["path"] == str(album)


def test_a_batch_records_what_the_same_listings_sent_one_by_one_record(
    client, db, worker, clock, volume, tmp_path, twin
):
    """Same scenario in two databases: one batch here, one listing at a time there."""
    twin_db, twin_client, twin_worker = twin
    album = write_files(volume / "Artist - Album", ALBUM)
    cross = write_files(volume / "Cross Seed", {"a.flac": 70_000})  # two torrents, same files
    wrong = write_files(volume / "Wrong Size", {"a.flac": 10_000}, seed=3)
    loose = write_files(volume, {"Lonely Song.flac": 50_000}) / "Lonely Song.flac"
    torrents = [
        (album, 37, PTH, make_torrent(album)),
        (cross, 1, PTH, make_torrent(cross)),
        (cross, 9, OPS, make_torrent(cross, private=False)),
        (wrong, 4, PTH, make_torrent(wrong)),
        (loose, 8, PTH, make_torrent(loose)),
    ]
    for target_db, target_client, headers in (
        (db, client, worker),
        (twin_db, twin_client, twin_worker),
    ):
        for root, torrent_id, site, data in torrents:
            register(
                target_client, target_db, headers, clock, root, torrent_id, site=site, data=data
            )
    write_files(wrong, {"a.flac": 9_999}, seed=3)
    write_files(album, {"notes.txt": 10})
    listings = [
        listing_of(album, dry_run=True),
        listing_of(album),
        listing_of(cross),
        listing_of(wrong),
        {"path": str(loose), "kind": "file", "files": [{"path": loose.name, "size": 50_000}]},
        listing_of(write_files(volume / "Unknown", {"x.flac": 1})),
        listing_of(album),  # again: nothing new
    ]
    batched = send_batch(client, worker, listings)
    one_by_one = [send_one(twin_client, twin_worker, listing) for listing in listings]
    assert batched == one_by_one
    assert [r["outcome"] for r in batched] == [
        "matched",
        "matched",
        "several_matched",
        "no_match",
        "matched",
        "no_match",
        "matched",
    ]
    assert batched[0]["matched"][0]["location"] == "would_record"
    assert batched[-1]["matched"][0]["location"] == "unchanged"
    assert projections(db) == projections(twin_db)
    assert events_of(db) == events_of(twin_db)


# ---------------------------------------------------------------- one torrent, two listings


def test_the_same_torrent_in_two_listings_of_a_batch_ends_where_the_later_one_is(
    client, db, worker, clock, volume, tmp_path
):
    """As if sent one after another: the second listing records a move from the first."""
    first = write_files(volume / "Album", ALBUM)
    info_hash = register(client, db, worker, clock, first, 37)
    second = tmp_path / "archive" / "Album"
    shutil.copytree(first, second)
    reports = send_batch(client, worker, [listing_of(first), listing_of(second)])
    for report in reports:
        [match] = report["matched"]
        assert match["location"] == "recorded"
        assert match["tasks"] == [{"site": PTH, "torrentId": 37, "status": "filled"}]
    assert db.get(torrent_doc_id(info_hash))["location"]["path"] == str(second)
    assert db.get(task_doc_id(PTH, 37))["path"] == str(second)
    names = [e["name"] for e in events_of(db) if e["aggregate"] == torrent_doc_id(info_hash)]
    assert names.count("located") == 2
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_same_listing_twice_in_a_batch_is_recorded_once(client, db, worker, clock, volume):
    root = write_files(volume / "Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    before = len(all_changes(db))
    first, again, dry = send_batch(
        client, worker, [listing_of(root), listing_of(root), listing_of(root, dry_run=True)]
    )
    assert (first["matched"][0]["location"], again["matched"][0]["location"]) == (
        "recorded",
        "unchanged",
    )
    assert again["matched"][0]["tasks"][0]["status"] == "already_filled"
    assert dry["matched"][0]["location"] == "unchanged"  # it sees what the batch recorded
    assert len(all_changes(db)) == before + 2  # located + filled
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_wrong_size_directory_in_a_batch_does_not_match(client, db, worker, clock, volume):
    good = write_files(volume / "Good", ALBUM)
    wrong = write_files(volume / "Wrong", {"01 - Intro.flac": 41_000, "02 - Song.flac": 30_000})
    register(client, db, worker, clock, good, 1)
    wrong_hash = register(client, db, worker, clock, wrong, 2)
    write_files(wrong, {"02 - Song.flac": 30_001})
    good_report, wrong_report = send_batch(client, worker, [listing_of(good), listing_of(wrong)])
    assert good_report["outcome"] == "matched"
    assert wrong_report["outcome"] == "no_match"
    [rejected] = [r for r in wrong_report["rejected"] if r["info_hash"] == wrong_hash]
    assert rejected["reasons"] == [
        {"problem": "wrong_size", "file": "02 - Song.flac", "expected": 30_000, "found": 30_001}
    ]
    assert db.get(task_doc_id(PTH, 1))["state"] == "done"
    assert db.get(task_doc_id(PTH, 2))["state"] == "ready"
    assert db.get(torrent_doc_id(wrong_hash))["location"] is None


# ---------------------------------------------------------------- caps and bad batches


def unknown_listing(i, files=1):
    return {
        "path": f"/ingest/unknown {i}",
        "files": [{"path": f"f{n}", "size": n} for n in range(files)],
    }


def test_a_batch_of_the_most_listings_allowed_is_answered(client, db, worker):
    listings = [unknown_listing(i) for i in range(MAX_BATCH_LISTINGS)]
    reports = send_batch(client, worker, listings)
    assert {r["outcome"] for r in reports} == {"no_match"}


@pytest.mark.parametrize(
    ("listings", "files"),
    [(MAX_BATCH_LISTINGS + 1, 1), (3, MAX_BATCH_FILES // 2 + 1)],
    ids=["listings", "files"],
)
def test_a_batch_over_a_cap_is_refused_and_changes_nothing(
    client, db, worker, clock, volume, listings, files
):
    root = write_files(volume / "Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    body = {
        "listings": [listing_of(root)] + [unknown_listing(i, files) for i in range(listings - 1)]
    }
    before = db_snapshot(db)
    response = client.post("/api/ingest", json=body, headers=worker)
    assert response.status_code == 400
    assert response.get_json()["error"] == "batch_too_large"
    assert db_snapshot(db) == before


GOOD = {"path": "/ingest/A", "files": [{"path": "a.flac", "size": 1}]}


@pytest.mark.parametrize(
    ("body", "index"),
    [
        ({"listings": []}, None),
        ({"listings": "all"}, None),
        ({"listings": None}, None),
        ({"listings": [GOOD], "dry_run": True}, None),  # a batch is nothing but its listings
        ({"listings": [GOOD, {"path": "relative", "files": GOOD["files"]}]}, 1),
        ({"listings": [GOOD, {**GOOD, "files": [{"path": "../x", "size": 1}]}]}, 1),
        ({"listings": [GOOD, [GOOD]]}, 1),
        ({"listings": [{"listings": [GOOD]}]}, 0),  # no batches inside batches
        ({"listings": [GOOD, GOOD, {**GOOD, "kind": "folder"}]}, 2),
    ],
)
def test_a_bad_batch_is_refused_whole_and_changes_nothing(
    client, db, worker, clock, volume, body, index
):
    root = write_files(volume / "Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    if index is not None:  # a good listing first: it must not be recorded either
        body = {**body, "listings": [listing_of(root), *body["listings"]]}
        index += 1
    before = db_snapshot(db)
    response = client.post("/api/ingest", json=body, headers=worker)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()
    assert error["error"] == "invalid_listing"
    assert error.get("details", {}).get("index") == index
    assert db_snapshot(db) == before
    assert db.get(task_doc_id(PTH, 37))["state"] == "ready"


# ---------------------------------------------------------------- the scanner


def entry(name, files=1, skipped=None):
    return Entry(Path("/ingest", name), "directory", [("f", 1)] * files, skipped)


def test_batches_group_entries_in_order_within_the_caps(monkeypatch):
    monkeypatch.setattr("worker.scanner.BATCH_FILES", 10)
    entries = [
        entry("a"),
        entry("b", skipped="no files"),  # rides along, does not count
        entry("c"),
        entry("d"),
        entry("e", files=9),  # the batch would hold 10 + files: it closes first
        entry("f", files=25),  # more than a batch holds: alone
        entry("g"),
    ]
    groups = [[e.path.name for e in group] for group in batches(entries, 3)]
    assert groups == [["a", "b", "c", "d"], ["e"], ["f"], ["g"]]


class IngestRequests:
    """WSGI middleware that notes how many listings each POST /api/ingest carried."""

    def __init__(self, wrapped):
        self.wrapped, self.sizes, self.lock = wrapped, [], threading.Lock()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/api/ingest":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            body = json.loads(raw)
            with self.lock:
                self.sizes.append(len(body["listings"]) if "listings" in body else 1)
            environ["wsgi.input"] = io.BytesIO(raw)
        return self.wrapped(environ, start_response)


@pytest.fixture
def observed_url(app):
    """The app over real HTTP behind IngestRequests; (base URL, the middleware)."""
    observer = IngestRequests(app.wsgi_app)
    app.wsgi_app = observer
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", observer
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run_scan(url, token, *args):
    return CliRunner().invoke(
        ingest_group, ["scan", *map(str, args), "--server", url, "--token", token]
    )


def test_scan_sends_batches_and_reports_every_entry(
    client, db, worker, worker_token, clock, observed_url, volume
):
    url, observer = observed_url
    layouts = [{path: size + n for path, size in ALBUM.items()} for n in range(1, 6)]
    roots = [write_files(volume / f"Album {n}", lay) for n, lay in enumerate(layouts, 1)]
    hashes = [register(client, db, worker, clock, root, n) for n, root in enumerate(roots, 1)]
    write_files(roots[2], {"01 - Intro.flac": 1})  # now of the wrong size
    write_files(volume / "Partial", {"a.flac.part": 5})  # skipped, not sent
    write_files(volume / "Unknown", {"x.flac": 5})
    result = run_scan(url, worker_token, volume, "--batch", "3", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert sorted(observer.sizes) == [3, 3]  # six listings, two requests
    lines = [line for line in result.output.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines[:7]] == [
        "matched",
        "matched",
        "no",  # Album 3: one file of the wrong size
        "matched",
        "matched",
        "skipped",  # Partial
        "no",  # Unknown
    ]
    assert "01 - Intro.flac is 1 bytes, not 40003" in result.output
    assert "7 entries" in result.output
    for n, (root, info_hash) in enumerate(zip(roots, hashes, strict=True), 1):
        task = db.get(task_doc_id(PTH, n))
        if n == 3:
            assert task["state"] == "ready"
        else:
            assert (task["state"], task["path"]) == ("done", str(root))
            assert db.get(torrent_doc_id(info_hash))["location"]["path"] == str(root)
    # a re-scan in batches of one, as JSON, writes nothing
    before = db_snapshot(db)
    observer.sizes.clear()
    again = run_scan(url, worker_token, volume, "--batch", "1", "--json")
    assert again.exit_code == 0, again.output
    assert observer.sizes == [1] * 6
    reports = [json.loads(line) for line in again.output.splitlines() if line.startswith("{")]
    assert [r["path"] for r in reports] == sorted(str(p) for p in volume.iterdir())
    assert db_snapshot(db) == before


def test_a_batch_refused_as_a_whole_is_sent_one_listing_at_a_time(
    client, db, worker, worker_token, clock, observed_url, volume
):
    """Only the bad listing is reported as an error; the rest are matched and recorded."""
    url, observer = observed_url
    root = write_files(volume / "Album", ALBUM)
    register(client, db, worker, clock, root, 37)
    scanner = Scanner(Coordinator(url, worker_token), verify=False, dry_run=False)
    bad = {"path": "not absolute", "files": [{"path": "a", "size": 1}]}
    good_report, error = scanner._send([listing_of(root), bad])
    assert good_report["outcome"] == "matched"
    assert getattr(error, "code", None) == "invalid_listing"
    assert observer.sizes == [2, 1, 1]
    assert db.get(task_doc_id(PTH, 37))["path"] == str(root)
