"""Design documents built from files and synced idempotently, against the real server."""

from __future__ import annotations

import shutil
import uuid

import pytest

from app.store.designdocs import DESIGNDOCS_DIR, VIEWS_DIR, build_design_docs, sync_design_docs
from app.store.events import event_log


@pytest.fixture
def files(tmp_path):
    """A copy of designdocs/ and views/ that a test may edit."""
    designdocs, views = tmp_path / "designdocs", tmp_path / "views"
    shutil.copytree(DESIGNDOCS_DIR, designdocs)
    shutil.copytree(VIEWS_DIR, views)
    return designdocs, views


def revs(db):
    ids = list(build_design_docs())
    return {doc_id: doc["_rev"] for doc_id, doc in db.get_many(ids).items()}


def test_file_paths_become_key_paths():
    docs = build_design_docs()
    queues = docs["_design/queues"]
    assert queues["language"] == "javascript"
    assert queues["views"]["leases_by_expiry"]["reduce"] == "_count"
    assert queues["views"]["ready"]["map"].startswith("function")  # leading comments dropped
    assert "_design/log" not in docs  # it belongs to the event log, not the read model
    log = build_design_docs(database="events")["_design/log"]
    assert log["filters"]["events"].startswith("function")
    assert log["validate_doc_update"].startswith("function")
    assert log["views"]["by_aggregate"]["map"].startswith("function")


def test_sync_is_idempotent(db):
    """The db fixture synced already: syncing again writes nothing."""
    before = revs(db)
    assert set(before) == set(build_design_docs())
    assert sync_design_docs(db) == []
    assert sync_design_docs(db) == []
    assert revs(db) == before


def test_a_fresh_database_gets_every_design_doc_once(couch_server):
    name = f"test_{uuid.uuid4().hex[:12]}"
    db = couch_server.create_database(name)
    try:
        assert sorted(sync_design_docs(db)) == sorted(build_design_docs())
        assert sync_design_docs(db) == []
    finally:
        couch_server.delete_database(name)


def test_a_changed_map_is_written_once(db, files):
    designdocs, views = files
    map_js = views / "queues" / "ready" / "map.js"
    map_js.write_text(map_js.read_text(encoding="utf-8").replace("null", "1"), encoding="utf-8")
    before = revs(db)
    changed = build_design_docs(designdocs, views)
    assert sync_design_docs(db, changed) == ["_design/queues"]
    assert sync_design_docs(db, build_design_docs(designdocs, views)) == []
    after = revs(db)
    assert after["_design/queues"] != before["_design/queues"]
    assert {k: v for k, v in after.items() if k != "_design/queues"} == {
        k: v for k, v in before.items() if k != "_design/queues"
    }
    assert (
        "emit([doc.queue, doc.queue_group || 0, doc.available_at || '', doc._id], 1)"
        in db.get("_design/queues")["views"]["ready"]["map"]
    )


def test_a_new_view_and_a_removed_view_are_synced(db, files):
    designdocs, views = files
    new_view = views / "stats" / "by_type"
    new_view.mkdir()
    (new_view / "map.js").write_text(
        "// Projections by type.\nfunction (doc) {\n  emit(doc.type, null);\n}\n", encoding="utf-8"
    )
    (new_view / "reduce.js").write_text("_count\n", encoding="utf-8")
    assert sync_design_docs(db, build_design_docs(designdocs, views)) == ["_design/stats"]
    assert "by_type" in db.get("_design/stats")["views"]
    shutil.rmtree(new_view)
    assert sync_design_docs(db, build_design_docs(designdocs, views)) == ["_design/stats"]
    assert "by_type" not in db.get("_design/stats")["views"]
    assert sync_design_docs(db) == []


def test_a_changed_validate_function_is_written(db, files):
    designdocs, views = files
    log = event_log(db)
    validate = designdocs / "log" / "validate_doc_update.js"
    text = validate.read_text(encoding="utf-8")
    validate.write_text(text + "\n", encoding="utf-8")
    # trailing whitespace is not a change: the stored text is stripped
    assert sync_design_docs(log, build_design_docs(designdocs, views, database="events")) == []
    validate.write_text(text.replace("never changed", "not changed"), encoding="utf-8")
    built = build_design_docs(designdocs, views, database="events")
    assert sync_design_docs(log, built) == ["_design/log"]
    assert "not changed" in log.get("_design/log")["validate_doc_update"]
