"""The thin CouchDB client against the real bundled server."""

from __future__ import annotations

import uuid

import pytest

from app.store.couch import (
    CouchServer,
    CouchUnavailableError,
    DocumentConflictError,
    DocumentNotFoundError,
)
from app.store.events import event_log


def test_missing_document_raises_not_found(db):
    with pytest.raises(DocumentNotFoundError) as error:
        db.get("album:404")
    assert error.value.status == 404
    assert db.get_or_none("album:404") is None


def test_missing_database_and_view_raise_not_found(couch_server, db):
    with pytest.raises(DocumentNotFoundError):
        couch_server.database(f"missing_{uuid.uuid4().hex[:8]}").info()
    with pytest.raises(DocumentNotFoundError):
        db.view("queues", "no_such_view")


def test_stale_revision_raises_conflict(db):
    doc = {"_id": "album:1", "type": "album"}
    first_rev = db.put(doc)
    assert doc["_rev"] == first_rev
    db.put(doc)
    with pytest.raises(DocumentConflictError) as error:
        db.put({"_id": "album:1", "type": "album", "_rev": first_rev})
    assert (error.value.status, error.value.error) == (409, "conflict")
    with pytest.raises(DocumentConflictError):
        db.put({"_id": "album:1", "type": "album"})  # creating an id that exists


def test_unreachable_server_raises_unavailable():
    server = CouchServer("http://127.0.0.1:9", timeout=2, retries=0)
    with pytest.raises(CouchUnavailableError):
        server.info()


def test_create_database_is_idempotent(couch_server):
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        couch_server.create_database(name)
        assert couch_server.database_exists(name)
        couch_server.create_database(name)  # exists: no error
    finally:
        couch_server.delete_database(name)
    assert not couch_server.database_exists(name)
    couch_server.delete_database(name)  # missing: no error


GOOD_EVENT = {
    "_id": "ev:20260101T000000.000000Z:here:0123456789abcde",
    "type": "event",
    "name": "imported",
    "at": "2026-01-01T00:00:00.000000Z",
    "actor": "t",
    "site": "here",
    "changes": [{"aggregate": "album:1", "version": 1, "name": "imported", "data": {}}],
}


def test_bulk_results_are_matched_to_inputs_by_id(db):
    """pouchdb-server reorders results around design and rejected docs; ours keep input order."""
    log = event_log(db)  # the database with a validator, so some docs are rejected
    good = dict(GOOD_EVENT)
    log.put(dict(good, _id=good["_id"] + "2"))
    docs = [
        dict(good, _id=good["_id"] + "1"),
        {"_id": "_design/extra", "language": "javascript"},
        dict(good, _id=good["_id"] + "2"),  # exists: refused
        {"_id": "ev:x", "type": "album"},  # not an event: forbidden by validate_doc_update
        dict(good, _id=good["_id"] + "4"),
    ]
    results = log.bulk_docs(docs)
    assert [r.id for r in results] == [d["_id"] for d in docs]
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[2].error in ("conflict", "forbidden") and results[3].error == "forbidden"
    assert log.get(docs[4]["_id"])["_rev"] == results[4].rev
    assert log.get("_design/extra")["_rev"] == results[1].rev


def test_bulk_refuses_one_id_twice(db):
    with pytest.raises(ValueError):
        db.bulk_docs([{"_id": "album:1", "type": "album"}, {"_id": "album:1", "type": "album"}])
    assert db.get_or_none("album:1") is None


def test_get_many_returns_only_existing_documents(db):
    db.bulk_docs([{"_id": f"album:{i}", "type": "album", "n": i} for i in range(3)])
    gone = db.get("album:2")
    db.delete(gone["_id"], gone["_rev"])
    found = db.get_many(["album:0", "album:1", "album:2", "album:9"])
    assert sorted(found) == ["album:0", "album:1"]
    assert found["album:1"]["n"] == 1
    assert db.get_many([]) == {}


def test_local_documents_round_trip(db):
    doc = {"_id": "_local/checkpoint", "seq": 5}
    db.put(doc)
    doc["seq"] = 6
    db.put(doc)
    assert db.get("_local/checkpoint")["seq"] == 6
    assert db.get_or_none("_local/other") is None


@pytest.mark.parametrize("page_size", [1, 7, 50, 1000])
def test_iter_view_pages_over_many_rows_of_one_key(db, page_size):
    """startkey_docid is ignored by pouchdb-server: rows sharing a key are paged by count."""
    docs = [{"_id": f"token:a{i:03d}", "type": "token", "name": "same"} for i in range(120)]
    docs += [{"_id": f"token:b{i:03d}", "type": "token", "name": f"n{i % 3}"} for i in range(30)]
    docs += [{"_id": "token:c", "type": "token", "name": "zzz"}]
    db.bulk_docs(docs)
    rows = list(db.iter_view("auth", "tokens_by_name", page_size=page_size))
    assert len(rows) == 151
    assert len({row["id"] for row in rows}) == 151  # nothing twice, nothing skipped
    keys = [row["key"] for row in rows]
    assert keys == sorted(keys)
    same = list(db.iter_view("auth", "tokens_by_name", page_size=page_size, key="same"))
    assert sorted(row["id"] for row in same) == [f"token:a{i:03d}" for i in range(120)]
    ranged = list(
        db.iter_view("auth", "tokens_by_name", page_size=page_size, startkey="n1", endkey="n2")
    )
    assert len(ranged) == 20


def test_view_with_keys_posts_them(db):
    db.bulk_docs([{"_id": f"token:{i}", "type": "token", "name": f"n{i}"} for i in range(5)])
    rows = db.view("auth", "tokens_by_name", keys=["n3", "n1", "missing"])
    assert [row["key"] for row in rows] == ["n3", "n1"]


def test_changes_reads_events_only_with_the_filter(db):
    log = event_log(db)
    log.bulk_docs([{"_id": "_design/extra", "language": "javascript"}, dict(GOOD_EVENT)])
    feed = log.changes(since=0, filter="log/events")
    assert [c["id"] for c in feed["results"]] == [GOOD_EVENT["_id"]]
    assert log.changes(since=feed["last_seq"], filter="log/events")["results"] == []


def test_prefix_reads_include_ids_with_any_character_after_the_prefix(db):
    ids = ["worker:a", "worker:\U0001f600", "worker:\ufff5x", "worker;", "workers:x"]
    db.bulk_docs([{"_id": i, "type": "x"} for i in ids])
    expected = ["worker:a", "worker:\ufff5x", "worker:\U0001f600"]
    assert sorted(db.iter_ids("worker:")) == sorted(expected)
    assert sorted(d["_id"] for d in db.iter_prefix("worker:")) == sorted(expected)
