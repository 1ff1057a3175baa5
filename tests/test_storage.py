"""Storage status (GET /api/storage, /api/storage/status, the dashboard panel) and
`distleech storage check`, over records from the sources API and from ingest, on real
directories with some files deleted."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from conftest import START, basic_auth
from factories import PTH, make_download_task
from torrent_factories import (
    app,  # noqa: F401  (the app with the torrents blueprint)
    listing_of,
    make_torrent,
    upload_file,
    write_files,
)

from app.accounts.auth import add_user
from app.cli.main import main
from app.config import load_settings
from app.errors import ApiError
from app.sources import aggregate, files, orders
from app.sources.aggregate import SourceSpec
from app.sources.files import FileReport
from app.storage import check, status
from app.timeutil import iso
from scheduler import jobs

SHA = "0f" * 32
PASSWORD = "correct horse battery"
ALBUM = {"01 - Intro.flac": 40_000, "02 - Song.flac": 30_000, "Scans/cover.jpg": 5_000}


@pytest.fixture
def content(tmp_path):
    """The content root on disk: what a source's worker wrote under `g/`."""
    root = tmp_path / "content"
    write_files(root / "g", {"a.jpg": 3, "b.jpg": 7, "extra.txt": 1})  # b: 4 recorded
    return root


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "ingest"
    path.mkdir()
    return path


def record_source_files(db):
    """A source whose sync recorded a, b, c present (3 + 4 + 5 bytes) and d deleted."""
    spec = SourceSpec(id="gallery", url="https://example.org/g", content_path="g")
    aggregate.add_source(db, spec, actor="op", now=START)
    orders.order_sync(db, "gallery", by="admin", actor="op", now=START)
    reports = [
        FileReport("a.jpg", "downloaded", 3, SHA),
        FileReport("b.jpg", "downloaded", 4, SHA),
        FileReport("c.jpg", "skipped", 5, SHA),
        FileReport("d.jpg", "deleted"),
    ]
    order = orders.order_id("gallery", 1)
    files.record_files(db, "gallery", order, reports, actor="w", now=START)


@pytest.fixture
def recorded(app, db, worker, clock, volume):  # noqa: F811
    client = app.test_client()
    record_source_files(db)
    root = write_files(volume / "Artist - Album", ALBUM)
    make_download_task(db, 37, now=clock(), host=PTH)
    response = upload_file(client, worker, make_torrent(root), site=PTH, torrent_id=37)
    assert response.status_code == 201, response.get_json()
    report = client.post("/api/ingest", json=listing_of(root), headers=worker).get_json()
    assert report["outcome"] == "matched", report
    return root


def settings_for(db, **storage):
    return load_settings(
        {"couchdb": {"url": db.server_url, "database": db.name}, "storage": storage}, environ={}
    )


def by_name(figures):
    return {root["name"]: root for root in figures["roots"]}


# ---------------------------------------------------------------- counts


def test_the_snapshot_counts_each_root_once_and_requests_only_read_it(db, recorded, volume):
    settings = settings_for(db)
    jobs.snapshot_stats(db, START)
    roots = by_name(status.get_storage(db, settings, START))
    assert list(roots) == ["content", str(volume)]
    content, ingest = roots["content"], roots[str(volume)]
    # c.jpg is present (skipped: already there), d.jpg was deleted
    assert (content["kind"], content["files"], content["bytes"]) == ("content", 3, 12)
    assert (content["path"], content["free_bytes"], content["last_check"]) == (None, None, None)
    assert (ingest["kind"], ingest["files"], ingest["bytes"]) == ("ingest", 3, 75_000)
    assert ingest["path"] == str(volume)
    assert ingest["free_bytes"] > 0 and ingest["total_bytes"] >= ingest["free_bytes"]
    # a new record shows after the next recount, not on every request
    files.record_files(
        db,
        "gallery",
        orders.order_id("gallery", 1),
        [FileReport("e.jpg", "downloaded", 10, SHA)],
        actor="w",
        now=START,
    )
    jobs.snapshot_stats(db, START + status.RECOUNT_EVERY / 2)
    assert by_name(status.get_storage(db, settings, START))["content"]["files"] == 3
    jobs.snapshot_stats(db, START + status.RECOUNT_EVERY * 2)
    assert by_name(status.get_storage(db, settings, START))["content"]["files"] == 4


def test_configured_volumes_group_what_lies_under_them_and_show_when_empty(db, recorded, volume):
    parent = str(volume.parent)
    settings = settings_for(db, ingest_volumes=f" {parent}/ , /mnt/empty")
    status.snapshot_storage(db, START, force=True)
    roots = by_name(status.get_storage(db, settings, START))
    assert list(roots) == ["content", "/mnt/empty", parent]
    assert (roots[parent]["files"], roots[parent]["bytes"]) == (3, 75_000)
    assert (roots["/mnt/empty"]["files"], roots["/mnt/empty"]["free_bytes"]) == (0, None)


def put_located_torrent(db, infohash: str, path: str) -> None:
    """A located torrent of two files (100 + 50 bytes) at `path`, as ingest records it."""
    db.put(
        {"_id": f"torrent:{infohash}", "type": "torrent",
         "files": [{"path": "a.flac", "size": 100}, {"path": "b.flac", "size": 50}],
         "location": {"kind": "dir", "path": path}}
    )  # fmt: skip


def test_two_torrents_at_one_directory_count_once_as_the_check_does(db, volume):
    album = write_files(volume / "Album", {"a.flac": 100, "b.flac": 50})
    put_located_torrent(db, "aa" * 20, str(album))
    put_located_torrent(db, "bb" * 20, str(album))  # the same album from a second site
    settings = settings_for(db)
    status.snapshot_storage(db, START, force=True)
    ingest = by_name(status.get_storage(db, settings, START))[str(volume)]
    result = check.check_root(db, settings, str(volume), path=None, now=START)
    assert (ingest["files"], ingest["bytes"]) == (2, 150)
    assert (result["checked"], result["missing"], result["unrecorded"]) == (2, 0, 0)


def test_the_anonymous_totals_read_only_the_snapshot(make_app, db, monkeypatch):
    for number in range(3):
        put_located_torrent(db, f"{number:040x}", f"/vol{number}/Album")
    client = make_app(storage={"content_root": "/no/such/dir"}).test_client()

    def no_statvfs(path):
        raise AssertionError(f"statvfs of {path} for the anonymous totals")

    monkeypatch.setattr(status, "disk_usage", no_statvfs)
    assert client.get("/api/storage/status").get_json() == {
        "storage_used": 450,
        "number_of_files": 6,
    }
    assert db.get(status.SNAPSHOT_ID)["roots"]  # counted once, and stored for what follows
    put_located_torrent(db, "ff" * 20, "/vol9/Album")  # shows after the next recount only
    assert client.get("/api/storage/status").get_json()["number_of_files"] == 6


def test_volume_of_takes_the_longest_configured_prefix():
    volumes = ["/srv", "/srv/disk1"]
    assert status.volume_of("/srv/disk1/x", volumes) == "/srv/disk1"
    assert status.volume_of("/srv/disk10", volumes) == "/srv"
    assert status.volume_of("/other", volumes) == "/other"


# ---------------------------------------------------------------- the check


def test_a_check_reports_what_the_records_place_on_disk_that_is_not(db, recorded, volume, content):
    settings = settings_for(db, content_root=str(content))
    (recorded / "02 - Song.flac").unlink()
    result = check.check_root(db, settings, str(volume), path=None, now=START)
    assert (result["checked"], result["missing"], result["mismatched"]) == (3, 1, 0)
    assert result["examples"] == ["Artist - Album/02 - Song.flac"]
    result = check.check_root(db, settings, "content", path=None, now=START)
    assert (result["checked"], result["missing"], result["examples"]) == (3, 1, ["g/c.jpg"])
    assert result["mismatched_examples"] == [{"location": "g/b.jpg", "size": 4, "found": 7}]
    assert result["unrecorded"] == 1  # extra.txt
    # the last check is what the status shows
    status.snapshot_storage(db, START, force=True)
    roots = by_name(status.get_storage(db, settings, START))
    assert roots["content"]["last_check"]["missing"] == 1
    assert roots["content"]["last_check"]["examples"] == ["g/c.jpg"]
    assert roots[str(volume)]["last_check"]["at"] == iso(START)


def test_a_check_keeps_only_the_first_examples(db, recorded, volume):
    settings = settings_for(db, check_examples=1)
    for name in ALBUM:
        (recorded / name).unlink()
    result = check.check_root(db, settings, str(volume), path=None, now=START)
    assert (result["missing"], len(result["examples"])) == (3, 1)


def test_a_symbolic_link_is_not_a_present_file(db, volume, tmp_path):
    outside = write_files(tmp_path / "elsewhere", {"big.bin": 50})
    album = write_files(volume / "Album", {"a.flac": 100})
    (album / "b.flac").symlink_to(outside / "big.bin")  # the recorded size, outside the root
    (album / "linked-dir").symlink_to(outside, target_is_directory=True)
    put_located_torrent(db, "aa" * 20, str(album))
    result = check.check_root(db, settings_for(db), str(volume), path=None, now=START)
    assert (result["checked"], result["missing"], result["mismatched"]) == (2, 1, 0)
    assert result["examples"] == ["Album/b.flac"]
    assert result["unrecorded"] == 0  # neither link counts as a file on the root


@pytest.mark.parametrize(
    "name, path, code",
    [
        ("nowhere", None, "storage_root_not_found"),
        ("content", None, "validation_failed"),  # no storage.content_root, no --path
        ("content", "/no/such/dir", "validation_failed"),
    ],
)
def test_bad_roots_and_paths_are_refused_with_stable_codes(db, name, path, code):
    with pytest.raises(ApiError) as caught:
        check.check_root(db, settings_for(db), name, path=path, now=START)
    assert caught.value.code == code


@pytest.fixture
def cli(tmp_path, db, monkeypatch):
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", db.name)
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    return CliRunner()


def test_the_cli_checks_a_root_and_prints_the_status(cli, recorded, content):
    (content / "g" / "b.jpg").write_bytes(b"abcd")  # the recorded size again
    done = cli.invoke(main, ["storage", "check", "content", "--path", str(content), "--json"])
    assert done.exit_code == 1, done.output  # c.jpg is missing
    assert json.loads(done.output)["examples"] == ["g/c.jpg"]
    (content / "g" / "c.jpg").write_bytes(b"12345")
    done = cli.invoke(main, ["storage", "check", "content", "--path", str(content)])
    assert done.exit_code == 0, done.output
    assert "3 recorded files checked, 0 missing" in done.output
    shown = cli.invoke(main, ["storage", "status", "--recount", "--json"])
    roots = by_name(json.loads(shown.output))
    assert roots["content"]["last_check"]["missing"] == 0
    assert "content content: 3 files" in cli.invoke(main, ["storage", "status"]).output
    unknown = cli.invoke(main, ["storage", "check", "nowhere"])
    assert unknown.exit_code == 1 and "storage_root_not_found" in unknown.output


# ---------------------------------------------------------------- HTTP and the dashboard


def test_the_api_answers_workers_and_admins_and_the_totals_anyone(
    make_app, db, recorded, worker, volume, content, clock
):
    client = make_app(storage={"content_root": str(content)}).test_client()
    assert client.get("/api/storage").status_code == 401
    body = client.get("/api/storage", headers=worker).get_json()
    roots = by_name(body)
    assert set(roots["content"]) == {
        *("name", "kind", "path", "files", "bytes", "free_bytes", "total_bytes", "last_check"),
    }
    assert roots["content"]["path"] == str(content) and roots["content"]["free_bytes"] > 0
    assert body["as_of"]
    totals = client.get("/api/storage/status").get_json()
    assert totals == {"storage_used": 12 + 75_000, "number_of_files": 6}


def test_the_api_refuses_anonymous_workers(make_app, db, recorded, worker):
    # auth.anonymous_workers lets anyone lease work; it must not show local paths
    client = make_app(auth={"anonymous_workers": True}).test_client()
    refused = client.get("/api/storage")
    assert (refused.status_code, refused.get_json()["error"]) == (401, "authentication_required")
    assert client.get("/api/storage", headers=worker).status_code == 200
    assert client.get("/api/storage/status").status_code == 200


def test_the_dashboard_panel_shows_the_apis_numbers(make_app, db, recorded, volume, clock):
    add_user(db, "root", PASSWORD, admin=True, actor="test", now=clock())
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    (recorded / "02 - Song.flac").unlink()
    settings = settings_for(db)
    check.check_root(db, settings, str(volume), path=None, now=START)
    client = make_app().test_client()
    api = client.get("/api/storage", headers=basic_auth("root", PASSWORD)).get_json()["roots"]
    assert client.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 303
    html = client.get("/").get_data(as_text=True)
    rows = re.findall(
        r'data-root="([^"]+)".*?data-files="(\d+)".*?data-bytes="(\d+)".*?data-missing="(\d*)"',
        html,
        re.S,
    )
    shown = [(name, int(f), int(b), int(m) if m else None) for name, f, b, m in rows]
    assert shown == [
        (
            "ingest volume 1" if root["kind"] == "ingest" else root["name"],  # no local path
            root["files"],
            root["bytes"],
            (root["last_check"] or {}).get("missing"),
        )
        for root in api
    ]
    assert str(volume) not in html and str(volume.parent) not in html  # nor in any attribute
    assert "Artist - Album/02 - Song.flac" not in html  # names of files: admins only
    client = make_app().test_client()  # another browser
    assert client.post("/login", data={"name": "root", "password": PASSWORD}).status_code == 303
    html = client.get("/").get_data(as_text=True)
    assert "Artist - Album/02 - Song.flac" in html and f'data-root="{volume}"' in html
