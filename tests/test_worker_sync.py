"""`distleech worker sync` against a real loopback gallery and the real coordinator over HTTP.

The coordinator is the `coordinator` fixture (tests/sync_fixtures.py): the app on
the test's CouchDB database, served over HTTP, with a real worker token. Tests
check what the worker reported (`files`, `ends`) and what the coordinator made
of it (`source`, `file_list`, `known`: the admin API).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sync_fixtures import coordinator, gallery  # noqa: F401  (fixtures)

from app.sources.jobs import queue_due_syncs
from app.store.projections import rebuild_projections
from worker import cli
from worker.coordinator import Coordinator
from worker.sync import SyncReport, SyncWorker

PICTURES = {
    "a.jpg": b"\xff\xd8" + b"a" * 3000,
    "b.png": b"\x89PNG" + b"b" * 5000,
    "album/c.jpg": b"\xff\xd8" + b"c" * 7000,
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_sync(coordinator, content_root: Path) -> SyncReport:  # noqa: F811
    worker = SyncWorker(Coordinator(coordinator.url, coordinator.token), content_root)
    return worker.run_batch()


def on_disk(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def statuses(files: list[dict]) -> dict[str, list[str]]:
    by_status: dict[str, list[str]] = {}
    for entry in files:
        by_status.setdefault(entry["status"], []).append(entry["filename"])
    return {status: sorted(names) for status, names in by_status.items()}


def order_state(coordinator, source_id: str) -> dict:  # noqa: F811
    """The source's current order as an admin sees it (GET /api/sources/<id>)."""
    return coordinator.source(source_id)["order"]


def by_name(coordinator, source_id: str) -> dict[str, dict]:  # noqa: F811
    """The coordinator's files of a source (GET /api/sources/<id>/files), by file name."""
    return {f["filename"]: f for f in coordinator.file_list(source_id)}


def recorded(files: dict[str, bytes], content_path: str, status: str) -> dict[str, dict]:
    """How the coordinator lists files that are here and were found remotely."""
    return {
        name: {
            "location": f"{content_path}/{name}",
            "status": status,
            "remote_status": "found",
            "present": True,
            "size": len(data),
            "sha256": sha(data),
        }
        for name, data in files.items()
    }


def facts(listed: dict[str, dict]) -> dict[str, dict]:
    keys = ("location", "status", "remote_status", "present", "size", "sha256")
    return {name: {k: f[k] for k in keys} for name, f in listed.items()}


@pytest.fixture
def source(gallery, coordinator, tmp_path):  # noqa: F811
    """A gallery of three pictures (one in a subdirectory) and a source for it."""
    gallery.add("pics", PICTURES)
    return coordinator.add_source(gallery.source_url("pics"), "mirrors/pics")


@pytest.mark.parametrize("listing", ["html", "json"])
def test_first_sync_downloads_all_then_the_second_skips_all(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    source,
    tmp_path,
    listing,
):
    gallery.listing = listing
    root = tmp_path / "content"
    # first sync: every file lands below the content path and is reported with size and hash
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert on_disk(root / "mirrors/pics") == PICTURES
    assert sorted(coordinator.files(source), key=lambda f: f["filename"]) == [
        {"filename": name, "status": "downloaded", "size": len(data), "sha256": sha(data)}
        for name, data in sorted(PICTURES.items())
    ]
    counts = {"downloaded": 3, "skipped": 0, "missing_remotely": 0, "deleted": 0}
    assert [(e["status"], e["counts"]) for e in coordinator.ends(source)] == [
        ("synchronised", counts)
    ]
    assert (report.leased, report.synchronised, report.downloaded) == (1, 1, 3)
    # the coordinator recorded the order and every file with the worker's size and hash
    shown = coordinator.source(source)
    assert (shown["order"]["state"], shown["order"]["counts"]) == ("synchronised", counts)
    assert shown["files"] == {
        "total": 3,
        "present": 3,
        "downloaded": 3,
        "skipped": 0,
        "missing_remotely": 0,
        "deleted": 0,
    }
    assert facts(by_name(coordinator, source)) == recorded(PICTURES, "mirrors/pics", "downloaded")
    # second sync: nothing is fetched again, everything is reported skipped
    fetched = [path for path, _ in gallery.requests if not path.endswith("/")]
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    assert [path for path, _ in gallery.requests if not path.endswith("/")] == fetched
    assert statuses(coordinator.files(source)[3:]) == {"skipped": sorted(PICTURES)}
    assert coordinator.ends(source)[-1]["counts"] == {**counts, "downloaded": 0, "skipped": 3}
    assert on_disk(root / "mirrors/pics") == PICTURES
    shown = coordinator.source(source)
    assert [h["state"] for h in shown["history"]] == ["synchronised", "synchronised"]
    assert shown["order"]["counts"] == {**counts, "downloaded": 0, "skipped": 3}
    assert facts(by_name(coordinator, source)) == recorded(PICTURES, "mirrors/pics", "skipped")


def test_nothing_due_leases_nothing(gallery, coordinator, source, tmp_path):  # noqa: F811
    assert run_sync(coordinator, tmp_path) == SyncReport()
    assert order_state(coordinator, source) is None  # a source without an order is left alone
    assert gallery.requests == []


def test_a_remote_deletion_is_reported_but_kept_without_the_flag(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    source,
    tmp_path,
):
    root = tmp_path / "content"
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    gallery.remove("pics", "album/c.jpg")
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    data = PICTURES["album/c.jpg"]
    assert coordinator.files(source)[-1] == {
        "filename": "album/c.jpg",
        "status": "missing_remotely",
        "size": len(data),
        "sha256": sha(data),
    }
    assert coordinator.ends(source)[-1]["counts"]["missing_remotely"] == 1
    assert on_disk(root / "mirrors/pics") == PICTURES  # still here
    # the coordinator: gone remotely, still present here (and so still known to the next order)
    order = order_state(coordinator, source)
    assert order["state"] == "synchronised" and order["counts"]["missing_remotely"] == 1
    c = by_name(coordinator, source)["album/c.jpg"]
    assert (c["status"], c["remote_status"], c["present"]) == (
        "missing_remotely",
        "not_found",
        True,
    )
    assert (c["size"], c["sha256"]) == (len(data), sha(data))
    assert coordinator.known(source) == set(PICTURES)
    assert coordinator.source(source)["files"]["missing_remotely"] == 1


def gone_here_and_there(gallery, coordinator, source, root: Path) -> None:  # noqa: F811
    """Sync the pictures, then remove album/c.jpg at the remote and here, and sync again."""
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    gallery.remove("pics", "album/c.jpg")
    (root / "mirrors/pics/album/c.jpg").unlink()  # by hand
    coordinator.order_sync(source)
    run_sync(coordinator, root)


def test_a_file_gone_remotely_and_locally_is_reported_without_size(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    source,
    tmp_path,
):
    gone_here_and_there(gallery, coordinator, source, tmp_path / "content")
    # nothing here to describe: no size, no hash; the coordinator takes it as it is
    assert coordinator.files(source)[-1] == {
        "filename": "album/c.jpg",
        "status": "missing_remotely",
    }
    c = by_name(coordinator, source)["album/c.jpg"]
    assert (c["status"], c["remote_status"]) == ("missing_remotely", "not_found")
    order = order_state(coordinator, source)
    assert order["state"] == "synchronised" and order["counts"]["missing_remotely"] == 1


def test_a_file_gone_remotely_and_locally_is_no_longer_known(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    source,
    tmp_path,
):
    root = tmp_path / "content"
    gone_here_and_there(gallery, coordinator, source, root)
    assert by_name(coordinator, source)["album/c.jpg"]["present"] is False
    assert coordinator.known(source) == {"a.jpg", "b.png"}
    # so the next order does not name it again
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    assert statuses(coordinator.files(source)[-2:]) == {"skipped": ["a.jpg", "b.png"]}
    assert order_state(coordinator, source)["counts"]["missing_remotely"] == 0


def test_a_remote_deletion_is_mirrored_with_the_flag(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
):
    gallery.add("pics", PICTURES)
    source = coordinator.add_source(
        gallery.source_url("pics"), "mirrors/pics", sync_remote_deletes=True
    )
    root = tmp_path / "content"
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    gallery.remove("pics", "album/c.jpg")
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    assert statuses(coordinator.files(source)[3:]) == {
        "skipped": ["a.jpg", "b.png"],
        "missing_remotely": ["album/c.jpg"],
        "deleted": ["album/c.jpg"],
    }
    assert coordinator.ends(source)[-1]["status"] == "synchronised"
    assert on_disk(root / "mirrors/pics") == {k: v for k, v in PICTURES.items() if "c" not in k}
    assert not (root / "mirrors/pics/album").exists()  # the emptied directory went too
    assert coordinator.known(source) == {"a.jpg", "b.png"}
    c = by_name(coordinator, source)["album/c.jpg"]
    assert (c["status"], c["remote_status"], c["present"]) == ("deleted", "not_found", False)
    shown = coordinator.source(source)
    assert shown["order"]["counts"] == {
        "downloaded": 0,
        "skipped": 2,
        "missing_remotely": 1,
        "deleted": 1,
    }
    assert (shown["files"]["total"], shown["files"]["present"], shown["files"]["deleted"]) == (
        3,
        2,
        1,
    )


def test_a_failed_listing_deletes_nothing(gallery, coordinator, tmp_path):  # noqa: F811
    gallery.add("pics", PICTURES)
    source = coordinator.add_source(
        gallery.source_url("pics"), "mirrors/pics", sync_remote_deletes=True
    )
    root = tmp_path / "content"
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    # the subdirectory's listing now fails: its file must not count as gone
    gallery.failing.add("/gallery/pics/album/")
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert report.failed == 1
    end = coordinator.ends(source)[-1]
    assert end["status"] == "failed" and "nothing deleted" in end["reason"]
    assert end["counts"]["missing_remotely"] == end["counts"]["deleted"] == 0
    assert on_disk(root / "mirrors/pics") == PICTURES
    # the coordinator: the order waits for its retry; every file is still present and found
    order = order_state(coordinator, source)
    assert (order["state"], order["attempts"]) == ("ready", 1) and order["retry_at"]
    assert "nothing deleted" in order["last_reason"]
    assert coordinator.known(source) == set(PICTURES)
    assert {f["remote_status"] for f in coordinator.file_list(source)} == {"found"}


def test_an_interrupted_sync_resumes(gallery, coordinator, tmp_path):  # noqa: F811
    big = os.urandom(512 * 1024)
    gallery.add("pics", {**PICTURES, "z.bin": big})
    source = coordinator.add_source(gallery.source_url("pics"), "pics")
    root = tmp_path / "content"
    gallery.stalled = "/gallery/pics/z.bin"
    coordinator.order_sync(source)
    # a worker process dies in the middle of z.bin
    worker = subprocess.Popen(
        # worker.cli's group directly: the worker needs nothing of the app's CLI
        [sys.executable, "-c", "from worker.cli import worker; worker()", "sync", "--once"]
        + ["--coordinator", coordinator.url, "--content-root", str(root)],
        env={**os.environ, "DISTLEECH_TOKEN": coordinator.token},
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert gallery.stall_started.wait(60), "the worker never reached z.bin"
        part = root / "pics/z.bin.part"
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert 0 < part.stat().st_size < len(big)
    assert not (root / "pics/z.bin").exists()
    assert coordinator.ends(source) == []  # the order was never closed
    assert "z.bin" not in {f["filename"] for f in coordinator.files(source)}
    # the lease expires; the next run skips what is complete and finishes the rest
    coordinator.expire_leases()
    gallery.stalled = None
    run_sync(coordinator, root)
    assert on_disk(root / "pics") == {**PICTURES, "z.bin": big}
    assert statuses(coordinator.files(source)) == {
        "skipped": sorted(PICTURES),
        "downloaded": ["z.bin"],
    }
    assert coordinator.files(source)[-1] == {
        "filename": "z.bin",
        "status": "downloaded",
        "size": len(big),
        "sha256": sha(big),
    }
    resumed = [rng for path, rng in gallery.requests if path == "/gallery/pics/z.bin"][-1]
    assert resumed and resumed.startswith("bytes=")  # only the missing half was fetched
    assert coordinator.ends(source)[-1]["status"] == "synchronised"
    # the coordinator: the same order, leased twice, synchronised once
    shown = coordinator.source(source)
    assert shown["order"]["state"] == "synchronised" and len(shown["history"]) == 1
    everything = {**PICTURES, "z.bin": big}
    assert facts(by_name(coordinator, source)) == {
        **recorded(PICTURES, "pics", "skipped"),
        **recorded({"z.bin": big}, "pics", "downloaded"),
    }
    assert coordinator.known(source) == set(everything)


def test_a_listing_that_climbs_out_is_refused(gallery, coordinator, tmp_path):  # noqa: F811
    gallery.add("evil", {"fine.jpg": b"fine"})
    gallery.listing = "json"
    root = tmp_path / "content"
    source = coordinator.add_source(
        gallery.source_url("evil"), "mirrors/evil", sync_remote_deletes=True
    )
    # the listing names a directory "..", whose listing (the gallery's root) names escaped.txt
    original = gallery.render

    def hostile(path, entries):
        if path == "/gallery/evil/":
            entries = [*entries, ("..", True)]
        return original(path, entries)

    gallery.render = hostile
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert not (root / "mirrors/escaped.txt").exists()
    assert on_disk(root) == {"mirrors/evil/fine.jpg": b"fine"}
    assert report.refused == 1
    end = coordinator.ends(source)[-1]
    assert end["status"] == "failed" and "outside the content directory" in end["reason"]
    order = order_state(coordinator, source)
    assert order["state"] == "ready" and "outside the content directory" in order["last_reason"]
    assert coordinator.known(source) == {"fine.jpg"}


@pytest.mark.parametrize(
    "remote, here",
    [("back\\slash.jpg", "back_slash.jpg"), ("c1\x85control.jpg", "c1control.jpg")],
)
def test_remote_names_the_coordinator_refuses_are_stored_under_names_it_takes(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
    remote,
    here,
):
    # a backslash or a C1 control character is a legal name here, but not one the
    # coordinator records (app/sources/checks.py): the worker names the file so that it can
    gallery.add("pics", {"a.jpg": b"a", remote: b"odd"})
    gallery.listing = "json"
    source = coordinator.add_source(gallery.source_url("pics"), "pics")
    root = tmp_path / "content"
    for _ in range(2):  # downloaded, then skipped under the same name
        coordinator.order_sync(source)
        run_sync(coordinator, root)
    assert on_disk(root / "pics") == {"a.jpg": b"a", here: b"odd"}
    assert [e["status"] for e in coordinator.ends(source)] == ["synchronised"] * 2
    assert statuses(coordinator.files(source)[2:]) == {"skipped": sorted(["a.jpg", here])}
    assert coordinator.known(source) == {"a.jpg", here}


def test_known_files_outside_the_content_path_are_never_deleted(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
):
    gallery.add("pics", {"a.jpg": b"a"})
    root = tmp_path / "content"
    (root / "mirrors").mkdir(parents=True)
    (root / "mirrors/precious.txt").write_bytes(b"keep me")
    source = coordinator.add_source(
        gallery.source_url("pics"), "mirrors/pics", sync_remote_deletes=True
    )
    # a compromised coordinator names files outside the content path (the real one never stores
    # such names: app/sources/checks.py refuses them)
    coordinator.tamper_lease(source, known_files=["../precious.txt", "/etc/hostname"])
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert (root / "mirrors/precious.txt").read_bytes() == b"keep me"
    assert report.refused == 2
    assert coordinator.ends(source)[-1]["status"] == "failed"
    assert statuses(coordinator.files(source)) == {"downloaded": ["a.jpg"]}
    order = order_state(coordinator, source)
    assert order["state"] == "ready" and "refused known files" in order["last_reason"]
    assert coordinator.known(source) == {"a.jpg"}


@pytest.mark.parametrize("content_path", ["../elsewhere", "/tmp/abs", "a/../../b", "", "."])
def test_an_unsafe_content_path_is_refused(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
    content_path,
):
    gallery.add("pics", PICTURES)
    root = tmp_path / "area" / "content"
    # the real coordinator never takes such a content path
    with pytest.raises(AssertionError, match="invalid_content_path"):
        coordinator.add_source(gallery.source_url("pics"), content_path)
    # a compromised one hands it out all the same: the worker refuses it
    source = coordinator.add_source(gallery.source_url("pics"), "pics")
    coordinator.tamper_lease(source, content_path=content_path)
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert report.failed == 1
    assert coordinator.ends(source)[-1]["status"] == "failed"
    assert on_disk(tmp_path / "area") == {}
    assert [p for p, _ in gallery.requests] == []  # the source was never even asked
    assert order_state(coordinator, source)["state"] == "ready"
    assert coordinator.file_list(source) == []


def test_the_orders_cookies_reach_the_source(gallery, coordinator, tmp_path):  # noqa: F811
    gallery.add("pics", {"a.jpg": b"a"})
    gallery.cookie = ("session", "s3cret")
    host = gallery.url.split("//")[1].split(":")[0]
    cookies = f"# Netscape HTTP Cookie File\n{host}\tFALSE\t/\tFALSE\t0\tsession\ts3cret\n"
    source = coordinator.add_source(gallery.source_url("pics"), "pics", cookies=cookies)
    coordinator.order_sync(source)
    run_sync(coordinator, tmp_path / "content")
    assert on_disk(tmp_path / "content") == {"pics/a.jpg": b"a"}
    assert coordinator.ends(source)[-1]["status"] == "synchronised"
    shown = coordinator.source(source)
    assert shown["has_cookies"] is True and shown["order"]["state"] == "synchronised"
    assert "s3cret" not in str(shown)


@pytest.mark.parametrize(
    "url, stored",
    [
        ("dirlist:HTTP://Example.ORG/Pub/", "dirlist:http://example.org/Pub/"),
        ("https://example.org/g/1", "https://example.org/g/1"),
        ("dirlist:ftp://example.org/pub/", None),
        ("dirlist:", None),
        ("javascript:alert(1)", None),
        ("DIRLIST:https://example.org/pub/", None),
    ],
)
def test_a_source_url_may_name_the_workers_extractor(coordinator, url, stored):  # noqa: F811
    # the worker reads `dirlist:<http(s) URL>` (worker/extractors.py): the coordinator takes it
    body = {"id": "s", "url": url, "content_path": "s"}
    if stored is None:
        refused = coordinator.call("POST", "/api/sources", 400, json=body)
        assert refused["error"] == "invalid_url"
    else:
        assert coordinator.call("POST", "/api/sources", 201, json=body)["url"] == stored


def test_the_command_line(gallery, coordinator, source, tmp_path, monkeypatch):  # noqa: F811
    root = tmp_path / "content"
    args = ["sync", "--coordinator", coordinator.url, "--content-root", str(root)]
    # no token: refused before anything is leased
    monkeypatch.delenv("DISTLEECH_TOKEN", raising=False)
    result = CliRunner().invoke(cli.worker, args)
    assert result.exit_code == 2 and "DISTLEECH_TOKEN" in result.output
    monkeypatch.setenv("DISTLEECH_TOKEN", coordinator.token)
    coordinator.order_sync(source)
    result = CliRunner().invoke(cli.worker, args)
    assert result.exit_code == 0, result.output
    assert "sources: leased 1, synchronised 1, failed 0, downloaded 3" in result.output
    assert on_disk(root / "mirrors/pics") == PICTURES
    assert order_state(coordinator, source)["state"] == "synchronised"
    assert coordinator.known(source) == set(PICTURES)


def test_a_scheduled_source_end_to_end(gallery, coordinator, tmp_path):  # noqa: F811
    # an admin adds a source with a schedule, over the API
    gallery.add("pics", PICTURES)
    body = {
        "id": "scheduled-pics",
        "url": gallery.source_url("pics"),
        "content_path": "mirrors/scheduled",
        "schedule": {"interval_seconds": 3600},
    }
    added = coordinator.call("POST", "/api/sources", 201, json=body)
    assert added["url"] == gallery.source_url("pics") and added["schedule"] == body["schedule"]
    source = added["id"]
    root = tmp_path / "content"
    # not due yet: the scheduler job queues nothing, and a worker finds nothing to do
    assert queue_due_syncs(coordinator.db, coordinator.clock()) == 0
    assert run_sync(coordinator, root) == SyncReport()
    # an hour later it is due: the job queues one order, once
    coordinator.clock.advance(seconds=3600)
    assert queue_due_syncs(coordinator.db, coordinator.clock()) == 1
    assert queue_due_syncs(coordinator.db, coordinator.clock()) == 0
    order = order_state(coordinator, source)
    assert (order["state"], order["queued_by"]) == ("ready", "schedule")
    # a worker syncs it
    report = run_sync(coordinator, root)
    assert (report.leased, report.synchronised, report.downloaded) == (1, 1, 3)
    # the coordinator recorded every file with the size and sha256 of the file on disk
    here = on_disk(root / "mirrors/scheduled")
    assert here == PICTURES
    assert facts(by_name(coordinator, source)) == recorded(here, "mirrors/scheduled", "downloaded")
    shown = coordinator.source(source)
    assert shown["order"]["state"] == "synchronised"
    assert shown["order"]["counts"] == {
        "downloaded": 3,
        "skipped": 0,
        "missing_remotely": 0,
        "deleted": 0,
    }
    assert (shown["files"]["total"], shown["files"]["present"]) == (3, 3)
    # the next run is an hour after this order, not before
    assert queue_due_syncs(coordinator.db, coordinator.clock()) == 0
    coordinator.clock.advance(seconds=3600)
    assert queue_due_syncs(coordinator.db, coordinator.clock()) == 1
    # every projection is what its events say
    assert rebuild_projections(coordinator.db, check_only=True).differing == []


# ---------------------------------------------------------------- review fixes


def test_a_symlinked_content_directory_cannot_lead_out_of_the_root(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
):
    gallery.add("pics", PICTURES)
    root, outside = tmp_path / "content", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"keep me")
    os.symlink(outside, root / "pics")  # the content directory is a link leading out
    source = coordinator.add_source(gallery.source_url("pics"), "pics", sync_remote_deletes=True)
    coordinator.order_sync(source)
    report = run_sync(coordinator, root)
    assert report.failed == 1
    [end] = coordinator.ends(source)
    assert end["status"] == "failed" and "outside the content root" in end["reason"]
    assert on_disk(outside) == {"precious.txt": b"keep me"}  # nothing written, nothing deleted
    assert [p for p, _ in gallery.requests] == []


def test_a_known_file_that_is_a_symlink_is_not_ours(
    gallery,  # noqa: F811
    coordinator,  # noqa: F811
    tmp_path,
):
    gallery.add("pics", {"a.jpg": b"a" * 10})
    source = coordinator.add_source(gallery.source_url("pics"), "pics", sync_remote_deletes=True)
    root = tmp_path / "content"
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    # someone replaces the worker's a.jpg by a link to a file of their own; a.jpg goes remotely
    own = root / "pics" / "own.txt"
    own.write_bytes(b"not from the gallery")
    (root / "pics" / "a.jpg").unlink()
    os.symlink(own, root / "pics" / "a.jpg")
    gallery.remove("pics", "a.jpg")
    coordinator.order_sync(source)
    run_sync(coordinator, root)
    # reported under its own name, without the target's size or hash; nothing deleted
    assert coordinator.files(source)[1:] == [{"filename": "a.jpg", "status": "missing_remotely"}]
    assert (root / "pics" / "a.jpg").is_symlink() and own.read_bytes() == b"not from the gallery"
    assert coordinator.ends(source)[-1]["status"] == "synchronised"
    assert coordinator.known(source) == set()


def test_a_name_with_a_colon_is_synced(gallery, coordinator, tmp_path):  # noqa: F811
    gallery.add("pics", {"a.jpg": b"a", "x:y.jpg": b"xy"})
    gallery.listing = "json"
    source = coordinator.add_source(gallery.source_url("pics"), "pics")
    coordinator.order_sync(source)
    report = run_sync(coordinator, tmp_path / "content")
    assert report.synchronised == 1
    assert coordinator.known(source) == {"a.jpg", "x:y.jpg"}


def test_the_worker_renews_its_lease_as_it_reports(source, coordinator, tmp_path):  # noqa: F811
    order = coordinator.order_sync(source)["order"]
    run_sync(coordinator, tmp_path / "content")
    assert coordinator.recorder.bodies(source, "renew") == [{"order": order}]
    assert order_state(coordinator, source)["state"] == "synchronised"
