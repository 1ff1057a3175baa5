"""The event store (invariant 4): immutable events, projections that equal their rebuild."""

from __future__ import annotations

import pytest
from factories import PTH, get_album, make_albums, make_download_task

from app.albums import album_doc_id, submit_metadata
from app.couch import CouchError, DocumentConflictError
from app.downloads import TorrentRef, submit_downloads, task_doc_id
from app.events import (
    ConcurrencyError,
    _lost_race,
    catch_up_projections,
    commit,
    event_id,
    make_event,
    read_events,
    rebuild_projections,
)
from app.leasing import reap_expired_leases
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


# ---------------------------------------------------------------- immutability


def test_changing_an_event_is_refused(db, clock):
    [album] = make_albums(db, 1, now=clock())
    event = db.get(event_id(album_doc_id(album), 1))
    event["data"]["album"] = "Something Else"
    with pytest.raises(CouchError) as refused:
        db.put(event)
    assert (refused.value.status, refused.value.error) == (403, "forbidden")
    assert db.get(event["_id"])["data"]["album"] == "Album 0"


def test_deleting_an_event_is_refused(db, clock):
    [album] = make_albums(db, 1, now=clock())
    event = db.get(event_id(album_doc_id(album), 1))
    with pytest.raises(CouchError) as refused:
        db.delete(event["_id"], event["_rev"])
    assert refused.value.error == "forbidden"
    assert db.get(event["_id"])["_rev"] == event["_rev"]
    [result] = db.bulk_docs([dict(event, _deleted=True)])
    assert result.error == "forbidden"
    assert db.get(event["_id"])["_rev"] == event["_rev"]


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": "album:1", "state": "ready"},
        {"_id": "album:1", "type": ""},
        {"_id": "album:1", "type": 5},
        {"_id": "other:1", "type": "album"},
        {"_id": "ev:album:1:0000000001", "type": "event", "aggregate": "album:1", "version": 1},
        {
            "_id": "ev:album:1:1",
            "type": "event",
            "aggregate": "album:1",
            "version": 1,
            "name": "imported",
            "at": "2026-01-01T00:00:00.000000Z",
            "actor": "test",
            "data": {},
        },
        {
            "_id": "ev:album:1:0000000000",
            "type": "event",
            "aggregate": "album:1",
            "version": 0,
            "name": "imported",
            "at": "2026-01-01T00:00:00.000000Z",
            "actor": "test",
            "data": {},
        },
    ],
    ids=["no-type", "empty-type", "number-type", "id-prefix", "event-fields", "event-id", "v0"],
)
def test_documents_without_their_required_fields_are_refused(db, doc):
    with pytest.raises(CouchError) as refused:
        db.put(dict(doc))
    assert refused.value.error == "forbidden"
    assert db.get_or_none(doc["_id"]) is None
    [result] = db.bulk_docs([dict(doc)])  # the same rule holds for bulk writes
    assert result.error == "forbidden"


def test_creating_an_existing_event_is_a_lost_race(db, clock):
    """CouchDB answers conflict, pouchdb-server forbidden event_immutable; both mean taken."""
    [album] = make_albums(db, 1, now=clock())
    again = make_event(album_doc_id(album), 1, "imported", {"x": 1}, "other", clock())
    [result] = db.bulk_docs([again])
    assert not result.ok
    assert _lost_race(result)
    with pytest.raises(CouchError) as refused:
        db.put(dict(again))
    assert refused.value.status in (403, 409)


def test_commit_decides_again_after_a_lost_race(db, clock):
    """Optimistic concurrency: a writer holding an old state loses the version and retries."""
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


def test_a_submission_that_keeps_losing_its_race_is_not_reported_accepted(db, clock, monkeypatch):
    """Invariant 3: never answer "accepted" for a fact that was not written."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    write = db.bulk_docs

    def rival_writes_first(docs, **kwargs):
        for doc in docs:  # a rival records the very version we are about to write
            if doc.get("type") == "event" and doc["aggregate"] == doc_id:
                not_found = {"retry_at": iso(clock())}
                write(
                    [make_event(doc_id, doc["version"], "not_found", not_found, "rival", clock())]
                )
        return write(docs, **kwargs)

    monkeypatch.setattr(db, "bulk_docs", rival_writes_first)
    with pytest.raises(ConcurrencyError):
        submit_metadata(db, {album: [TorrentRef(PTH, 1)]}, holder="w", now=clock(), retry_minutes=1)
    monkeypatch.undo()
    catch_up_projections(db)
    stored = get_album(db, album)
    assert stored["state"] != "found"
    assert stored["not_found"] == stored["version"] - 1  # every rival fact is kept
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- crash healing


def test_catch_up_heals_an_event_without_its_projection(db, clock):
    """A crash between the event write and the projection write heals itself."""
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    expires = iso(clock().replace(hour=13))
    db.put(make_event(doc_id, 2, "leased", {"holder": "w", "expires_at": expires}, "w", clock()))
    assert get_album(db, album)["version"] == 1  # the crash: projection lags
    assert rebuild_projections(db, check_only=True).differing == [doc_id]
    assert catch_up_projections(db) == 1
    healed = get_album(db, album)
    assert (healed["version"], healed["state"], healed["lease"]["holder"]) == (2, "leased", "w")
    assert rebuild_projections(db, check_only=True).differing == []
    # the checkpoint moved on: nothing left to repair
    assert catch_up_projections(db) == 0


def test_leasing_skips_an_item_whose_projection_lags(client, db, worker, clock):
    """An album leased by a writer that crashed before its projection write is not handed
    out again, and the lease call does not spin on it."""
    crashed, healthy = make_albums(db, 2, now=clock())
    expires = iso(clock().replace(hour=13))
    doc_id = album_doc_id(crashed)
    db.put(make_event(doc_id, 2, "leased", {"holder": "w", "expires_at": expires}, "w", clock()))
    response = client.get("/metadata/5", headers=worker)
    assert [a["id"] for a in response.get_json()["albums"]] == [healthy]
    assert get_album(db, crashed)["lease"]["holder"] == "w"
    assert client.get("/metadata/5", headers=worker).get_json() == {"albums": []}


def test_submission_repairs_a_lagging_projection_and_keeps_both_facts(db, clock):
    [album] = make_albums(db, 1, now=clock())
    doc_id = album_doc_id(album)
    db.put(make_event(doc_id, 2, "not_found", {"retry_at": iso(clock())}, "w", clock()))
    ref = TorrentRef(PTH, 3)
    submit_metadata(db, {album: [ref]}, holder="w2", now=clock(), retry_minutes=60)
    stored = get_album(db, album)
    assert (stored["version"], stored["state"], stored["not_found"]) == (3, "found", 1)
    assert rebuild_projections(db, check_only=True).differing == []


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


def test_a_failed_write_raises_and_is_not_reported_as_recorded(db, clock):
    with pytest.raises(DocumentConflictError):
        db.put({"_id": "album:1", "type": "album", "_rev": "1-abc"})
