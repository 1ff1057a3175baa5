"""`distleech migrate`, proved on a database made by the old one-database main (commit fca3f4c).

The fixture (tests/data/legacy_main_fca3f4c.json, made by make_legacy_fixture.py
with that commit's own code) holds albums imported, leased, found and not
found, download tasks, archive URLs, a worker, users (one changed its
password), tokens (one revoked) and the tracker's directory, events and
projections side by side, and the plaintext credentials it handed out.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import START, Clock, basic_auth, token_header

from app import create_app
from app.cli.main import migrate_command
from app.queues.leasing import reap_expired_leases
from app.store.couch import Database
from app.store.events import event_log
from app.store.migrate import (
    LAYOUT_ID,
    MigrationError,
    convert_event,
    migrate,
)
from app.store.migrate_check import renamed_aggregate
from app.store.projections import rebuild_projections
from app.store.setup import init_database, is_legacy_layout

FIXTURE = json.loads(
    (Path(__file__).parent / "data" / "legacy_main_fca3f4c.json").read_text(encoding="utf-8")
)
LEGACY_EVENTS = [d for d in FIXTURE["docs"] if d["_id"].startswith("ev:")]
CREDENTIALS = FIXTURE["credentials"]
SITE = "site-a"
CRASH_POINTS = [
    "databases",
    "copy_page",
    "copy",
    "checked",
    "check",
    "validator",
    "delete_page",
    "delete",
    "finish",
]


class Crash(Exception):
    """Stands for the process dying at one point of the migration."""


@pytest.fixture
def legacy_db(couch_server):
    """A fresh database holding the old main's documents, as that code left them."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    db = couch_server.create_database(name)
    docs = FIXTURE["docs"]
    design = [d for d in docs if d["_id"].startswith("_design/")]
    assert all(r.ok for r in db.bulk_docs(design))  # the old validator guards what follows
    rest = [d for d in docs if not d["_id"].startswith("_design/")]
    assert all(r.ok for r in db.bulk_docs(rest))
    db.put({"_id": "_local/projector-checkpoint", "seq": 99})  # the old projector's place
    yield db
    for suffix in ("", "_events", "_secrets", "_peers"):
        couch_server.delete_database(name + suffix)


def all_docs(db: Database) -> dict[str, dict]:
    rows = db.server.get_json(f"{db.path}/_all_docs", include_docs=True)["rows"]
    return {row["id"]: row["doc"] for row in rows}


def snapshot(db: Database) -> dict[str, dict[str, str]]:
    """Ids and revisions of every document of the deployment's databases."""
    found = {}
    for database in (db, event_log(db), db.companion("secrets")):
        if db.server.database_exists(database.name):
            rows = db.server.get_json(f"{database.path}/_all_docs")["rows"]
            found[database.name] = {row["id"]: row["value"]["rev"] for row in rows}
    found["layout"] = {"rev": (db.get_or_none(LAYOUT_ID) or {}).get("_rev", "")}
    return found


def without_hash(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "password_hash"}


def app_for(db: Database, clock: Clock):
    return create_app(
        {
            "couchdb": {"url": db.server_url, "database": db.name},
            "scheduler": {"enabled": False},
            "site": {"name": SITE},
        },
        clock=clock,
    )


def assert_migrated(db: Database) -> None:
    """Every old fact once in the log, no secret anywhere, projections equal to a rebuild."""
    log_docs = [d for d in all_docs(event_log(db)).values() if d["_id"].startswith("ev:")]
    expected = {e["_id"]: e for e in (convert_event(d, SITE) for d in LEGACY_EVENTS)}
    stored = {d["_id"]: {k: v for k, v in d.items() if k != "_rev"} for d in log_docs}
    assert stored == expected  # one copy each, whatever crashed and reran
    changes = defaultdict(list)
    for doc in log_docs:
        for change in doc["changes"]:
            changes[change["aggregate"]].append((change["version"], change["name"], change["data"]))
    legacy = defaultdict(list)
    for event in LEGACY_EVENTS:
        legacy[renamed_aggregate(event["aggregate"])].append(
            (event["version"], event["name"], without_hash(event["data"]))
        )
    assert {agg: sorted(c) for agg, c in changes.items()} == {
        agg: sorted(c) for agg, c in legacy.items()
    }
    assert sum(len(c) for c in changes.values()) == len(LEGACY_EVENTS)

    read_model = all_docs(db)
    assert not [i for i in read_model if i.startswith("ev:")]
    assert "_design/events" not in read_model
    assert db.get_or_none("_local/projector-checkpoint") in (None, {})  # old seq gone
    assert db.get(LAYOUT_ID)["version"] == 2
    for database_docs in (log_docs, read_model.values()):
        text = json.dumps(list(database_docs))
        assert "password_hash" not in text and "scrypt:" not in text
        # an old token's id was the SHA-256 of its secret: no such hash is left
        for token in CREDENTIALS["tokens"].values():
            assert hashlib.sha256(token.encode()).hexdigest() not in text
    report = rebuild_projections(db, check_only=True)
    assert (report.differing, report.without_events) == ([], [])
    assert report.events == len(LEGACY_EVENTS)
    # what was not event-sourced is kept as it was
    assert read_model["cache:redacted.ch:torrent:37"]["value"] == {"x": 1}
    assert not is_legacy_layout(db)


def test_migration_keeps_every_fact_and_moves_the_secrets_out(legacy_db):
    assert is_legacy_layout(legacy_db)
    lines: list[str] = []
    report = migrate(legacy_db, site=SITE, echo=lines.append)
    assert report.copied == len(LEGACY_EVENTS) == report.deleted
    assert (report.passwords, report.tokens) == (3, 2)  # the revoked token is not linked
    assert_migrated(legacy_db)
    assert any(f"events copied: {len(LEGACY_EVENTS)}" in line for line in lines)


def test_after_migration_users_log_in_and_tokens_and_queues_work(legacy_db):
    migrate(legacy_db, site=SITE)
    clock = Clock(START + timedelta(hours=3))  # the old leases have expired by now
    client = app_for(legacy_db, clock).test_client()
    admin = basic_auth("root", CREDENTIALS["users"]["root"])
    assert client.get("/api/whitelist", headers=admin).status_code == 200
    for user, password in CREDENTIALS["users"].items():
        # a non-admin is forbidden (403) from an admin route, but known (not 401)
        status = client.get("/api/whitelist", headers=basic_auth(user, password)).status_code
        assert status == (200 if user in CREDENTIALS["admins"] else 403), user
    for user, password in CREDENTIALS["old_passwords"].items():
        response = client.get("/api/whitelist", headers=basic_auth(user, password))
        assert response.status_code == 401
    whitelist = {e["prefix"] for e in client.get("/api/whitelist", headers=admin).get_json()}
    assert "-TR:3" in whitelist and "-DE" not in whitelist

    worker = token_header(CREDENTIALS["tokens"]["seedbox-1"])
    assert reap_expired_leases(legacy_db, clock()) > 0  # the migrated leases expire as before
    albums = client.get("/metadata/100", headers=worker).get_json()["albums"]
    assert len(albums) == 26  # 30 imported, 4 reported (2 found, 2 not found)
    assert "Enter the Wu-Tang: 36 Chambers" in {a["album"] for a in albums}
    submitted = {str(albums[0]["id"]): [{"site": "https://redacted.ch/", "torrentId": 99}]}
    assert client.post("/metadata/submit", json=submitted, headers=worker).status_code == 200
    tasks = client.post(
        "/torrents", data={"site": "https://redacted.ch/", "rows": "10"}, headers=worker
    ).get_json()["torrents"]
    assert sorted(t["siteTorrentId"] for t in tasks) == [38, 99]  # 37 was filled before

    queuer = token_header(CREDENTIALS["tokens"]["queuer-1"])
    queued = client.post("/api/worker/queue", data={"url": "https://example.org/c"}, headers=queuer)
    assert queued.status_code in (200, 201)
    revoked = token_header(CREDENTIALS["revoked_tokens"]["old-worker"])
    assert client.get("/metadata/1", headers=revoked).status_code == 401
    assert rebuild_projections(legacy_db, check_only=True).differing == []


def test_a_second_run_says_already_migrated_and_changes_nothing(legacy_db, monkeypatch, tmp_path):
    migrate(legacy_db, site=SITE)
    before = snapshot(legacy_db)
    assert migrate(legacy_db, site=SITE).already_migrated
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", legacy_db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", legacy_db.name)
    result = CliRunner().invoke(migrate_command, [])
    assert result.exit_code == 0, result.output
    assert "already migrated" in result.output
    assert snapshot(legacy_db) == before


def test_the_command_migrates_with_the_configured_site(legacy_db, monkeypatch, tmp_path):
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", legacy_db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", legacy_db.name)
    monkeypatch.setenv("DISTLEECH_SITE__NAME", SITE)
    result = CliRunner().invoke(migrate_command, [])
    assert result.exit_code == 0, result.output
    assert f"events copied: {len(LEGACY_EVENTS)}" in result.output
    assert "done:" in result.output
    assert_migrated(legacy_db)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_any_point_is_mended_by_running_again(legacy_db, point):
    def crash_at(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    with pytest.raises(Crash):
        migrate(legacy_db, site=SITE, hook=crash_at, page_size=10)
    # the rerun does not depend on the site name the operator configures now
    report = migrate(legacy_db, site="another-name", page_size=10)
    assert report.already_migrated == (point == "finish")  # "finish": after the last write
    assert_migrated(legacy_db)
    client = app_for(legacy_db, Clock(START + timedelta(hours=3))).test_client()
    alice = basic_auth("alice", CREDENTIALS["users"]["alice"])
    assert client.get("/api/whitelist", headers=alice).status_code == 403  # known, not admin


def test_an_unexplained_difference_stops_before_anything_is_removed(legacy_db):
    album = next(d for d in all_docs(legacy_db).values() if d.get("type") == "album")
    album["album"] = "changed behind the events' back"
    legacy_db.put(album)
    with pytest.raises(MigrationError, match=album["_id"]) as stopped:
        migrate(legacy_db, site=SITE)
    assert "album: stored" in str(stopped.value)
    docs = all_docs(legacy_db)
    assert len([i for i in docs if i.startswith("ev:")]) == len(LEGACY_EVENTS)
    assert "_design/events" in docs
    assert is_legacy_layout(legacy_db)


def test_a_database_made_in_the_new_layout_is_not_legacy(couch_server):
    db = couch_server.create_database(f"test_{uuid.uuid4().hex[:12]}")
    try:
        init_database(db, warm=False)
        assert not is_legacy_layout(db)
        assert migrate(db, site=SITE).already_migrated
    finally:
        for suffix in ("", "_events", "_secrets"):
            couch_server.delete_database(db.name + suffix)
