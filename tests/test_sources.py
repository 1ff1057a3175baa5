"""Sources as operations: checks, scheduled syncs, the file records, and the CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import START

from app.accounts import credentials
from app.cli.main import main
from app.errors import ApiError
from app.queues.leasing import QueueLeaser
from app.sources import aggregate, checks, dispatch, files, jobs, orders
from app.sources.aggregate import SourceSpec
from app.sources.files import FileReport
from app.store.events import event_log
from app.store.projections import rebuild_projections

SHA = "0f" * 32
COOKIES = ".example.org\tTRUE\t/\tTRUE\t0\tsid\tcli-s3cret\n"


def add(db, source_id="gallery", now=START, **fields):
    fields.setdefault("content_path", "g" if source_id == "gallery" else source_id)
    spec = SourceSpec(id=source_id, url="https://example.org/g", **fields)
    return aggregate.add_source(db, spec, actor="op", now=now)


def stored_text(db) -> str:
    return json.dumps(list(event_log(db).iter_prefix("")) + list(db.iter_prefix("")))


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("portraits/", "portraits"),
        ("a/b c/d", "a/b c/d"),
        ("ünï/cødé", "ünï/cødé"),
        ("C:x", "C:x"),  # a legal POSIX name, not a drive letter where workers run
    ],
)
def test_content_paths_that_stay_inside_the_root(raw, expected):
    assert checks.check_content_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["/abs", "//x", "..", "../x", "a/..", "a/./b", "a//b", "a\\b", "a\x00b", "a\nb", "\x85"]
    + ["a\udc80"],  # a lone surrogate: no document can hold it
)
def test_content_paths_that_could_escape_are_refused(raw):
    with pytest.raises(ApiError) as caught:
        checks.check_content_path(raw)
    assert caught.value.code == "invalid_content_path"


def test_a_cron_schedule_is_checked_by_apschedulers_parser():
    assert checks.check_schedule({"cron": " 0  3 * * * "}) == {"cron": "0 3 * * *"}
    with pytest.raises(ApiError):
        checks.check_schedule({"cron": "0 25 * * *"})


# ---------------------------------------------------------------- scheduled syncs


def test_an_interval_schedule_queues_a_sync_when_due_and_only_once(db):
    add(db, schedule={"interval_seconds": 3600})
    assert jobs.queue_due_syncs(db, START + timedelta(minutes=59)) == 0
    assert jobs.queue_due_syncs(db, START + timedelta(minutes=60)) == 1
    assert jobs.queue_due_syncs(db, START + timedelta(minutes=61)) == 0  # one is open
    order = orders.get_order(db, "gallery")
    assert order["state"] == "ready" and order["queued_by"] == "schedule"
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_cron_schedule_counts_from_the_last_order(db):
    add(db, schedule={"cron": "0 3 * * *"})  # START is 12:00 UTC
    assert jobs.queue_due_syncs(db, START + timedelta(hours=14, minutes=59)) == 0
    assert jobs.queue_due_syncs(db, START + timedelta(hours=15)) == 1  # 03:00 the next day
    # the worker finishes at once: the next one is due at 03:00 a day later, not before
    leased, _ = dispatch.lease_next(db, QueueLeaser(db), "w", START + timedelta(hours=15), 60)
    result = orders.SyncResult("gallery", leased["round"], "synchronised", "w")
    orders.report_result(db, result, now=START + timedelta(hours=15, minutes=5), max_attempts=3)
    assert jobs.queue_due_syncs(db, START + timedelta(hours=38)) == 0
    assert jobs.queue_due_syncs(db, START + timedelta(hours=39)) == 1


def test_disabled_and_unscheduled_sources_are_never_queued(db):
    add(db, "manual")
    add(db, "off", schedule={"interval_seconds": 60}, enabled=False)
    assert jobs.queue_due_syncs(db, START + timedelta(days=30)) == 0
    # enabled again: its schedule counts from then, so no burst of missed syncs
    orders.set_enabled(db, "off", True, actor="op", now=START + timedelta(days=30))
    assert jobs.queue_due_syncs(db, START + timedelta(days=30, seconds=30)) == 0
    assert jobs.queue_due_syncs(db, START + timedelta(days=30, seconds=60)) == 1


def test_the_scheduler_runs_the_job_every_schedule_seconds():
    from app.config import load_settings
    from app.sources import scheduled_jobs

    settings = load_settings({"sources": {"schedule_seconds": 42}}, environ={})
    assert scheduled_jobs(settings) == [(jobs.queue_due_syncs, 42)]


# ---------------------------------------------------------------- files


def record(db, round_number, *reports, now=START):
    order = orders.order_id("gallery", round_number)
    return files.record_files(db, "gallery", order, list(reports), actor="w", now=now)


def test_file_records_follow_their_reports(db):
    add(db)
    orders.order_sync(db, "gallery", by="admin", actor="op", now=START)
    record(db, 1, FileReport("a.jpg", "downloaded", 3, SHA), FileReport("b.jpg", "skipped", 4, SHA))
    record(db, 1, FileReport("a.jpg", "missing_remotely", 3, SHA), FileReport("b.jpg", "deleted"))
    a = db.get(files.file_doc_id("gallery", "a.jpg"))
    b = db.get(files.file_doc_id("gallery", "b.jpg"))
    # gone remotely but kept locally; gone and deleted locally
    assert (a["remote_status"], a["present"], a["size"]) == ("not_found", True, 3)
    assert (b["remote_status"], b["present"]) == ("not_found", False)
    assert a["location"] == "g/a.jpg" and a["key"] == "g/a.jpg"
    assert files.known_files(db, "gallery") == ["a.jpg"]
    assert files.count_files(db, "gallery") == {
        "total": 2,
        "present": 1,
        "downloaded": 0,
        "skipped": 0,
        "missing_remotely": 1,
        "deleted": 1,
    }
    # the ingest side finds the present file by its location and size, or its content
    by_key = db.view("sources", "files_by_key", keys=[["g/a.jpg", 3]])
    assert [row["value"] for row in by_key] == ["gallery"]
    assert [r["id"] for r in db.view("sources", "files_by_sha256", keys=[SHA])] == [
        files.file_doc_id("gallery", "a.jpg")
    ]


def test_one_event_per_batch_and_the_amqp_mapping_is_in_it(db):
    add(db)
    orders.order_sync(db, "gallery", by="admin", actor="op", now=START)
    reports = [FileReport(f"{i}.jpg", "downloaded", i, SHA) for i in range(50)]
    before = len(list(event_log(db).iter_ids("ev:")))
    record(db, 1, *reports, FileReport("s.jpg", "skipped", 1, SHA))
    events = list(event_log(db).iter_prefix("ev:"))
    assert len(events) == before + 1
    [last] = [e for e in events if e["changes"][0]["aggregate"].startswith("sourcefile:")]
    assert len(last["changes"]) == 51
    names = {c["name"] for c in last["changes"]}
    assert names == {"downloaded", "download_skipped"}
    # GL_FILE_DOWNLOADED / GL_FILE_DOWNLOAD_SKIPPED need only source_id and filename
    assert all({"source_id", "filename"} <= set(c["data"]) for c in last["changes"])


def test_a_file_the_last_good_sync_did_not_report_is_unknown(db):
    add(db)
    orders.order_sync(db, "gallery", by="admin", actor="op", now=START)
    record(db, 1, FileReport("old.jpg", "downloaded", 1, SHA))
    orders.report_result(
        db,
        orders.SyncResult("gallery", 1, "synchronised", "op", any_round=True),
        now=START,
        max_attempts=3,
    )
    orders.order_sync(db, "gallery", by="admin", actor="op", now=START)
    record(db, 2, FileReport("new.jpg", "downloaded", 1, SHA))
    orders.report_result(
        db,
        orders.SyncResult("gallery", 2, "synchronised", "op", any_round=True),
        now=START,
        max_attempts=3,
    )
    last = orders.get_order(db, "gallery")["last_synchronised"]["round"]
    docs, _ = files.list_files(db, "gallery")
    remote = {d["filename"]: files.public_file(d, last)["remote_status"] for d in docs}
    assert remote == {"new.jpg": "found", "old.jpg": "unknown"}
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli(tmp_path, db, monkeypatch):
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", db.name)
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    return CliRunner()


def test_cli_add_change_list_show_disable_enable_sync(cli, db, monkeypatch):
    monkeypatch.setenv("GALLERY_COOKIES", COOKIES)
    added = cli.invoke(
        main,
        ["source", "add", "gallery", "https://example.org/g", "g/", "--every", "3600"]
        + ["--remote-deletes", "--cookies-env", "GALLERY_COOKIES"],
    )
    assert added.exit_code == 0, added.output
    assert "cli-s3cret" not in added.output
    changed = cli.invoke(main, ["source", "change", "gallery", "--cron", "0 3 * * *"])
    assert changed.exit_code == 0 and "changed" in changed.output
    listed = json.loads(cli.invoke(main, ["source", "list", "--json"]).output)
    [source] = listed["sources"]
    assert source["schedule"] == {"cron": "0 3 * * *"} and source["has_cookies"] is True
    assert source["sync_remote_deletes"] is True
    assert cli.invoke(main, ["source", "sync", "gallery"]).output.startswith("queued")
    assert cli.invoke(main, ["source", "sync", "gallery"]).output.startswith("already_queued")
    assert "disabled" in cli.invoke(main, ["source", "disable", "gallery"]).output
    assert "gallery enabled" in cli.invoke(main, ["source", "enable", "gallery"]).output
    shown = json.loads(cli.invoke(main, ["source", "show", "gallery", "--json"]).output)
    assert shown["order"]["state"] == "cancelled"
    # bad input: the API's codes, nothing changed
    bad = cli.invoke(main, ["source", "add", "x", "https://example.org/", "../up"])
    assert bad.exit_code == 1 and "invalid_content_path" in bad.output
    missing = cli.invoke(main, ["source", "change", "gallery", "--cookies-env", "NOPE_NOT_SET"])
    assert missing.exit_code == 1 and "invalid_cookies" in missing.output
    # the cookies live in the secrets database only
    assert "cli-s3cret" not in stored_text(db)
    assert any(d.get("cookies") == COOKIES for d in credentials.list_secret_documents(db))
    assert cli.invoke(main, ["source", "change", "gallery", "--no-cookies"]).exit_code == 0
    assert not any(d.get("type") == "source_cookies" for d in credentials.list_secret_documents(db))
    assert rebuild_projections(db, check_only=True).differing == []
