"""The event store (invariant 4): immutable events, projections that equal their rebuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from factories import (
    PTH,
    all_changes,
    append_change,
    event_ids,
    get_album,
    make_albums,
    make_download_task,
)

from app.queues.albums import album_doc_id, submit_metadata
from app.queues.downloads import TorrentRef, submit_downloads, task_doc_id
from app.queues.leasing import QueueLeaser, reap_expired_leases
from app.store import commit as store_commit
from app.store import events, projections
from app.store.catchup import catch_up_projections
from app.store.commit import commit
from app.store.couch import CouchError, CouchUnavailableError, Database, DocumentConflictError
from app.store.events import EVENT_PREFIX, ConcurrencyError, event_log, read_events
from app.store.projections import rebuild_projections, repair_phantoms
from app.timeutil import iso


def workflow(client, db, worker, clock):
    """Import, lease, find, miss, expire, re-lease, download: every event kind of the core."""
    ids = make_albums(db, 4, now=clock())
    assert client.get("/metadata/4", headers=worker).status_code == 200
    clock.advance(minutes=5)
    found = {str(ids[0]): [{"site": PTH, "torrentId": 1}], str(ids[1]): []}
    assert client.post("/metadata/submit", json=found, headers=worker).status_code == 200
    clock.advance(minutes=61)
    reap_expired_leases(db, clock())
    assert client.get("/metadata/1", headers=worker).status_code == 200
    assert (
        client.post("/torrents", data={"site": PTH, "rows": "1"}, headers=worker).status_code == 200
    )
    done = {"/ingest/x": [{"site": PTH, "torrentId": 1}]}
    assert client.post("/torrents/submit", json=done, headers=worker).status_code == 200
    return ids


# ---------------------------------------------------------------- the log


def only_event(db):
    [event_id] = event_ids(db)
    return event_log(db).get(event_id)


def test_one_command_over_many_aggregates_is_one_event(db, clock):
    """An import batch pays the validator once: one event, a change per album."""
    ids = make_albums(db, 3, now=clock())
    event = only_event(db)
    assert event["name"] == "imported" and event["actor"] == "test" and event["site"]
    assert [c["aggregate"] for c in event["changes"]] == [album_doc_id(i) for i in ids]
    assert {c["version"] for c in event["changes"]} == {1}
    assert all(get_album(db, i)["last_event"] == event["_id"] for i in ids)


def test_the_read_model_holds_no_event_and_the_log_nothing_else(db, clock):
    make_albums(db, 2, now=clock())
    assert all(not i.startswith(EVENT_PREFIX) for i in db_snapshot_ids(db))
    assert db.get_or_none("_design/log") is None  # the validator lives in the log only
    with pytest.raises(CouchError) as refused:
        event_log(db).put({"_id": "album:1", "type": "album"})
    assert refused.value.error == "forbidden"


def db_snapshot_ids(db):
    return [row["id"] for row in db.server.get_json(f"{db.path}/_all_docs")["rows"]]


def test_changing_an_event_is_refused(db, clock):
    make_albums(db, 1, now=clock())
    event = only_event(db)
    event["changes"][0]["data"]["album"] = "Something Else"
    with pytest.raises(CouchError) as refused:
        event_log(db).put(event)
    assert (refused.value.status, refused.value.error) == (403, "forbidden")
    assert only_event(db)["changes"][0]["data"]["album"] == "Album 0"


def test_deleting_an_event_is_refused(db, clock):
    make_albums(db, 1, now=clock())
    event = only_event(db)
    with pytest.raises(CouchError) as refused:
        event_log(db).delete(event["_id"], event["_rev"])
    assert refused.value.error == "forbidden"
    [result] = event_log(db).bulk_docs([dict(event, _deleted=True)])
    assert result.error == "forbidden"
    assert only_event(db)["_rev"] == event["_rev"]


GOOD = {
    "_id": "ev:20260101T000000.000000Z:here:0123456789abcdef",
    "type": "event",
    "name": "imported",
    "at": "2026-01-01T00:00:00.000000Z",
    "actor": "test",
    "site": "here",
    "changes": [{"aggregate": "album:1", "version": 1, "name": "imported", "data": {}}],
}


@pytest.mark.parametrize(
    "override",
    [
        {"type": "album"},
        {"_id": "album:1"},
        {"name": ""},
        {"site": None},
        {"changes": []},
        {"changes": [{"aggregate": "album", "version": 1, "name": "x", "data": {}}]},
        {"changes": [{"aggregate": "album:1", "version": 0, "name": "x", "data": {}}]},
        {"changes": [{"aggregate": "album:1", "version": 1.5, "name": "x", "data": {}}]},
        {"changes": [{"aggregate": "album:1", "version": 1, "name": "x"}]},
    ],
    ids=["type", "id", "name", "site", "no-changes", "aggregate", "v0", "v1.5", "no-data"],
)
def test_malformed_events_are_refused(db, override):
    doc = dict(GOOD, **override)
    with pytest.raises(CouchError) as refused:
        event_log(db).put(dict(doc))
    assert refused.value.error == "forbidden"
    [result] = event_log(db).bulk_docs([dict(doc)])  # the same rule holds for bulk writes
    assert result.error == "forbidden"
    assert event_ids(db) == []
    event_log(db).put(dict(GOOD))  # the well-formed one is stored
    assert event_ids(db) == [GOOD["_id"]]


@pytest.mark.parametrize(
    "keys",
    [("x:", "x:9"), ("x", "x:\ufff0"), ("a:b", "a:b:c"), ("ü:1", "ü:1:\u00e9")],
    ids=["colon", "ufff0", "nested", "non-ascii"],
)
def test_aggregate_keys_holding_colons_and_any_character_keep_their_own_events(db, clock, keys):
    """An aggregate's events are found by key, never by an id range that another key
    could fall into (`ev:whitelist:x:…` inside `whitelist:x:9`'s range)."""
    first, second = (f"worker:{k}" for k in keys)
    for doc_id, status in ((first, "one"), (second, "two"), (first, "three")):
        data = {"status": status, "at": iso(clock()), "heartbeat": True}
        commit(db, [(doc_id, lambda s, d=data: ("heartbeat", d))], actor="w", now=clock())
    assert [e["data"]["status"] for e in read_events(db, first)] == ["one", "three"]
    assert [e["data"]["status"] for e in read_events(db, second)] == ["two"]
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- concurrency


def test_commit_decides_again_after_a_lost_race(db, clock):
    """Optimistic concurrency: a writer holding an old state loses the _rev and retries."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    stale = db.get(doc_id)
    # someone else records version 2 first
    commit(
        db,
        [(doc_id, lambda state: ("not_found", {"retry_at": iso(clock())}))],
        actor="a",
        now=clock(),
    )
    seen_versions = []

    def decide(state):
        seen_versions.append(state["version"])
        return "not_found", {"retry_at": iso(clock())}

    [outcome] = commit(db, [(doc_id, decide)], actor="b", now=clock(), states={doc_id: stale})
    assert outcome.recorded and outcome.event["version"] == 3
    assert seen_versions == [1, 2]
    assert [e["actor"] for e in read_events(db, doc_id)] == ["test", "a", "b"]
    assert db.get(doc_id)["not_found"] == 2


def test_lease_with_retry_0_reports_the_lost_race(db, clock):
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    stale = db.get(doc_id)
    commit(
        db,
        [(doc_id, lambda state: ("not_found", {"retry_at": iso(clock())}))],
        actor="a",
        now=clock(),
    )
    [outcome] = commit(
        db,
        [(doc_id, lambda state: ("not_found", {"retry_at": iso(clock())}))],
        actor="b",
        now=clock(),
        states={doc_id: stale},
        retry_lost=0,
    )
    assert (outcome.recorded, outcome.lost_race) == (False, True)
    assert db.get(doc_id)["version"] == 2
    assert len(event_ids(db)) == 2  # the loser wrote no event


def test_a_submission_that_keeps_losing_its_race_is_not_reported_accepted(db, clock, monkeypatch):
    """Invariant 3: never answer "accepted" for a fact that was not written."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    write = db.bulk_docs
    rival_writing = []

    def rival_writes_first(docs, **kwargs):
        if not rival_writing and any(doc["_id"] == doc_id for doc in docs):
            rival_writing.append(True)  # a rival records a change first, every time
            not_found = {"retry_at": iso(clock())}
            commit(db, [(doc_id, lambda s: ("not_found", not_found))], actor="r", now=clock())
            rival_writing.pop()
        return write(docs, **kwargs)

    monkeypatch.setattr(db, "bulk_docs", rival_writes_first)
    with pytest.raises(ConcurrencyError):
        submit_metadata(db, {album: [TorrentRef(PTH, 1)]}, holder="w", now=clock(), retry_minutes=1)
    monkeypatch.undo()
    stored = get_album(db, album)
    assert stored["state"] != "found"
    assert stored["not_found"] == stored["version"] - 1  # every rival fact is kept
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- crash healing


def crash_before_the_log(monkeypatch, *, process_dies=True):
    """Make the next commits fail after their projections, before their event: the
    process dies there (it cannot put the projections back), or, without
    process_dies, the log refuses the event (and the process puts them back)."""

    def crash(db, event):
        if not process_dies:
            raise events.EventRefusedError("refused")
        raise ConnectionError("the process died here")

    monkeypatch.setattr(events, "append_event", crash)
    if process_dies:
        monkeypatch.setattr(store_commit, "_undo_claims", lambda *args: None)
    monkeypatch.setattr(store_commit.time, "sleep", lambda seconds: None)


def test_a_command_whose_event_is_refused_puts_its_projections_back(
    client, db, worker, clock, monkeypatch
):
    ids = make_albums(db, 3, now=clock())
    crash_before_the_log(monkeypatch, process_dies=False)
    assert client.get("/metadata/2", headers=worker).status_code >= 500  # never "ok"
    with pytest.raises(events.EventRefusedError):
        make_albums(db, 2, now=clock(), title="New {i}")
    monkeypatch.undo()
    assert {get_album(db, i)["state"] for i in ids} == {"ready"}  # at once, no grace
    assert rebuild_projections(db, check_only=True).differing == []
    assert rebuild_projections(db, check_only=True).without_events == []
    assert len(client.get("/metadata/5", headers=worker).get_json()["albums"]) == 3


def test_a_command_that_dies_before_its_event_is_rolled_back_after_the_grace(
    client, db, worker, clock, monkeypatch
):
    """A lease whose event never reached the log was never answered: its albums
    go back to the queue, and the read model equals the log again."""
    ids = make_albums(db, 3, now=clock())
    crash_before_the_log(monkeypatch)
    assert client.get("/metadata/2", headers=worker).status_code >= 500  # never "ok"
    monkeypatch.undo()
    assert sum(get_album(db, i)["state"] == "leased" for i in ids) == 2  # phantoms
    assert "leased" not in {name for _, _, name in all_changes(db)}  # no fact recorded
    # within the grace period a commit may still be in flight: nothing is touched
    assert repair_phantoms(db) == 0
    assert repair_phantoms(db, grace_seconds=0) == 2  # as the grace (wall clock) ran out
    assert {get_album(db, i)["state"] for i in ids} == {"ready"}
    assert rebuild_projections(db, check_only=True).differing == []
    assert len(client.get("/metadata/5", headers=worker).get_json()["albums"]) == 3
    assert repair_phantoms(db, grace_seconds=0) == 0  # the checkpoint moved on


def test_an_import_that_dies_before_its_event_can_be_run_again(db, clock, monkeypatch):
    crash_before_the_log(monkeypatch)
    with pytest.raises(ConnectionError):
        make_albums(db, 3, now=clock())
    monkeypatch.undo()
    assert repair_phantoms(db, grace_seconds=0) == 3
    assert rebuild_projections(db, check_only=True).differing == []
    ids = make_albums(db, 3, now=clock())  # the import again: every album is added
    assert [get_album(db, i)["version"] for i in ids] == [1, 1, 1]
    assert len(all_changes(db)) == 3


def test_catch_up_heals_an_event_whose_projection_was_lost(db, clock):
    """An event in the log that the read model misses (a lost write, or a site's
    replicated event) is projected by the projector."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    expires = iso(clock().replace(hour=13))
    lease = {"holder": "w", "expires_at": expires}
    append_change(db, doc_id, 2, "leased", lease, actor="w", now=clock())
    assert get_album(db, album)["version"] == 1  # the read model lags
    assert rebuild_projections(db, check_only=True).differing == [doc_id]
    assert catch_up_projections(db) == 1
    healed = get_album(db, album)
    assert (healed["version"], healed["state"], healed["lease"]["holder"]) == (2, "leased", "w")
    assert rebuild_projections(db, check_only=True).differing == []
    assert catch_up_projections(db) == 0  # the checkpoint moved on


# ---------------------------------------------------------------- rebuild


def test_rebuild_equals_stored_after_a_workflow(client, db, worker, clock):
    workflow(client, db, worker, clock)
    report = rebuild_projections(db, check_only=True)
    assert report.differing == []
    assert report.aggregates >= 6  # 4 albums, 1 task, 1 token
    assert report.events > report.aggregates


def test_rebuild_finds_and_fixes_a_tampered_projection(client, db, worker, clock):
    ids = workflow(client, db, worker, clock)
    tampered = get_album(db, ids[2])
    original_state = tampered["state"]
    tampered["state"] = "found"
    db.put(tampered)
    task = db.get(task_doc_id(PTH, 1))
    task["path"] = "/elsewhere"
    db.put(task)
    assert sorted(rebuild_projections(db, check_only=True).differing) == sorted(
        [album_doc_id(ids[2]), task_doc_id(PTH, 1)]
    )
    assert get_album(db, ids[2])["state"] == "found"  # check_only writes nothing
    report = rebuild_projections(db)
    assert report.written == 2
    assert get_album(db, ids[2])["state"] == original_state
    assert db.get(task_doc_id(PTH, 1))["path"] == "/ingest/x"
    assert rebuild_projections(db, check_only=True).differing == []


def test_rebuild_recreates_a_deleted_projection(db, clock):
    [album] = make_albums(db, 1, now=clock())
    stored = get_album(db, album)
    db.delete(stored["_id"], stored["_rev"])
    assert rebuild_projections(db, check_only=True).differing == [album_doc_id(album)]
    assert rebuild_projections(db).written == 1
    assert get_album(db, album)["version"] == 1
    assert rebuild_projections(db, check_only=True).differing == []


def test_rebuild_pages_through_many_streams(db, clock):
    ids = make_albums(db, 30, now=clock())
    make_download_task(db, 4, now=clock(), album_ids=ids[:2])
    submit_downloads(db, {"/x": [TorrentRef(PTH, 4)]}, holder="w", now=clock())
    report = rebuild_projections(db, check_only=True, batch=7)
    assert (report.aggregates, report.events, report.differing) == (31, 32, [])


def test_rebuild_reports_and_removes_projections_without_events(db, clock):
    make_albums(db, 2, now=clock())
    db.put({"_id": "album:999", "type": "album", "state": "ready", "queue": "metadata"})
    report = rebuild_projections(db, check_only=True)
    assert report.without_events == ["album:999"]
    assert db.get_or_none("album:999") is not None  # check_only writes nothing
    assert rebuild_projections(db).deleted == 1
    assert db.get_or_none("album:999") is None
    assert rebuild_projections(db, check_only=True).without_events == []


def test_a_failed_write_raises_and_is_not_reported_as_recorded(db, clock):
    with pytest.raises(DocumentConflictError):
        db.put({"_id": "album:1", "type": "album", "_rev": "1-abc"})


# ---------------------------------------------------------------- the projector and live commits


def leased_in_log(db, doc_id):
    """(version, holder) of every lease of one album recorded in the log."""
    return [
        (c["version"], c["data"]["holder"])
        for c in read_events(db, doc_id)
        if c["name"] == "leased"
    ]


def lease_with_a_slow_append(db, clock, monkeypatch, meanwhile):
    """Lease one album as A, and run `meanwhile` between A's projection write and its
    event append; then B tries to lease it. Returns (album id, A's albums, B's albums)."""
    [album] = make_albums(db, 1, now=clock())
    a, b = QueueLeaser(db), QueueLeaser(db)
    append = events.append_event
    got_b = []

    def slow_append(database, event):
        if not got_b and any(c["name"] == "leased" for c in event["changes"]):
            meanwhile(database)
            got_b.extend(b.lease("metadata", "B", 1, clock(), timedelta(hours=1), actor="B"))
        append(database, event)

    monkeypatch.setattr(events, "append_event", slow_append)
    got_a = a.lease("metadata", "A", 1, clock(), timedelta(hours=1), actor="A")
    monkeypatch.undo()
    return album_doc_id(album), got_a, got_b


@pytest.mark.parametrize("projector", ["phantoms", "catch_up_foreign", "catch_up"])
def test_the_projector_never_undoes_a_commit_in_flight(db, clock, monkeypatch, projector):
    """Invariant 1 with the projector running: a lease between its two writes is
    neither rolled back as a phantom nor refolded away, so nobody else gets the album."""

    def run_projector(database):
        if projector == "phantoms":
            assert repair_phantoms(database) == 0
        elif projector == "catch_up_foreign":  # a scheduler whose site name differs
            catch_up_projections(Database(database.server, database.name, site="elsewhere"))
        else:
            catch_up_projections(database)

    doc_id, got_a, got_b = lease_with_a_slow_append(db, clock, monkeypatch, run_projector)
    assert [d["_id"] for d in got_a] == [doc_id] and got_b == []
    assert leased_in_log(db, doc_id) == [(2, "A")]
    assert rebuild_projections(db, check_only=True).differing == []


def test_rebuild_on_a_running_store_keeps_what_was_committed_meanwhile(db, clock, monkeypatch):
    [album] = make_albums(db, 1, now=clock())
    write_chunk = projections._rebuild_chunk
    got_a = []

    def lease_then_write(database, chunk, report, check_only):
        if not got_a:  # a lease lands after the log was read, before the chunk is written
            got_a.extend(
                QueueLeaser(db).lease("metadata", "A", 1, clock(), timedelta(hours=1), "A")
            )
        write_chunk(database, chunk, report, check_only)

    monkeypatch.setattr(projections, "_rebuild_chunk", lease_then_write)
    report = rebuild_projections(db)
    monkeypatch.undo()
    assert got_a and report.differing == []
    assert get_album(db, album)["lease"]["holder"] == "A"
    assert QueueLeaser(db).lease("metadata", "B", 1, clock(), timedelta(hours=1), "B") == []


def age_projections(db, prefix, *, minutes):
    """Backdate the write time of projections, as if `minutes` had passed since."""
    then = iso(datetime.now(UTC) - timedelta(minutes=minutes))
    docs = [dict(doc, written_at=then) for doc in db.iter_prefix(prefix)]
    assert all(r.ok for r in db.bulk_docs(docs))


def test_an_import_run_again_at_once_after_a_crash_loses_nothing(db, clock, monkeypatch):
    """The re-run must not take the dead import's phantoms for stored albums: it is told
    to try again while they may still be in flight, and then adds every album."""
    crash_before_the_log(monkeypatch)
    with pytest.raises(ConnectionError):
        make_albums(db, 3, now=clock())
    monkeypatch.undo()
    with pytest.raises(ConcurrencyError):
        make_albums(db, 3, now=clock())  # at once: the phantoms are younger than the grace
    age_projections(db, "album:", minutes=10)  # as if the grace ran out
    ids = make_albums(db, 3, now=clock())
    assert [get_album(db, i)["version"] for i in ids] == [1, 1, 1]
    assert repair_phantoms(db, grace_seconds=0) == 0  # nothing left to roll back
    assert all(get_album(db, i) for i in ids)
    assert len(all_changes(db)) == 3
    assert rebuild_projections(db, check_only=True).differing == []


def test_an_append_whose_answer_is_lost_stands_and_is_recorded_once(db, clock, monkeypatch):
    [album] = make_albums(db, 1, now=clock())
    append = events.append_event

    def answer_lost(database, event):
        append(database, event)  # the server wrote it; the answer timed out
        raise CouchUnavailableError(0, "unavailable", "read timed out")

    monkeypatch.setattr(events, "append_event", answer_lost)
    submit_metadata(db, {album: []}, holder="w", now=clock(), retry_minutes=1)  # no error
    monkeypatch.undo()
    assert get_album(db, album)["not_found"] == 1
    assert [c[2] for c in sorted(all_changes(db))] == ["imported", "not_found"]  # once each
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_refused_append_after_a_lost_race_keeps_the_rivals_fact(db, clock, monkeypatch):
    """The undo puts back the state the winning decision was made on, not an older one."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    stale = db.get(doc_id)  # read before the rival's lease lands
    assert QueueLeaser(db).lease("metadata", "R", 1, clock(), timedelta(hours=1), "R")

    def refused(database, event):
        raise events.EventRefusedError("refused")

    monkeypatch.setattr(events, "append_event", refused)
    with pytest.raises(events.EventRefusedError):
        commit(
            db,
            [(doc_id, lambda state: ("not_found", {"retry_at": iso(clock())}))],
            actor="w",
            now=clock(),
            states={doc_id: stale},
        )
    monkeypatch.undo()
    assert get_album(db, album)["lease"]["holder"] == "R"
    assert QueueLeaser(db).lease("metadata", "S", 1, clock(), timedelta(hours=1), "S") == []
    assert rebuild_projections(db, check_only=True).differing == []


def test_albums_of_an_import_that_died_are_not_leased(db, clock, monkeypatch):
    """A lease on top of an unrecorded import would put a lease of an album the log
    never had into the log: the lease path checks what was written moments ago."""
    crash_before_the_log(monkeypatch)
    with pytest.raises(ConnectionError):
        make_albums(db, 3, now=clock())
    monkeypatch.undo()
    assert QueueLeaser(db).lease("metadata", "w", 5, clock(), timedelta(hours=1), "w") == []
    assert all_changes(db) == []
    assert repair_phantoms(db, grace_seconds=0) == 3
    ids = make_albums(db, 3, now=clock())
    leased = QueueLeaser(db).lease("metadata", "w", 5, clock(), timedelta(hours=1), "w")
    assert sorted(d["id"] for d in leased) == sorted(ids)
