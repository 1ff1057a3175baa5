"""Database set-up: create the database, sync design documents, warm indexes."""

from __future__ import annotations

from app import albums, archive, auth, downloads, torrents, workers  # noqa: F401 (projectors)
from app.couch import Database
from app.designdocs import build_design_docs, sync_design_docs, warm_views
from app.tracker import accounts  # noqa: F401 (projectors)


def init_database(db: Database, *, warm: bool = True) -> list[str]:
    """Create the database if missing and sync design docs; return the ids written.

    Idempotent: nothing is written when the files and the stored docs agree.
    """
    if not db.server.database_exists(db.name):
        db.server.create_database(db.name)
    docs = build_design_docs()
    changed = sync_design_docs(db, docs)
    if warm:
        warm_views(db, docs)
    return changed
