"""Database set-up: the read model and its event log, design documents, access, indexes."""

from __future__ import annotations

import logging

from app.accounts.credentials import init_secrets_database
from app.store.couch import CouchError, Database, DocumentConflictError
from app.store.designdocs import build_design_docs, sync_design_docs, warm_views
from app.store.events import EVENT_PREFIX, event_log

log = logging.getLogger(__name__)

LEGACY_VALIDATOR_ID = "_design/events"  # the one-database layout's validator


class LegacyLayoutError(Exception):
    """The database still has the one-database layout of before the event log split."""


def ensure_database(db: Database) -> None:
    """Create a database if it is missing (another process creating it too is fine)."""
    if not db.server.database_exists(db.name):
        try:
            db.server.create_database(db.name)
        except DocumentConflictError:
            pass  # created concurrently (412 reads as a conflict)


def restrict_to_app_account(db: Database) -> None:
    """Let only the app's own CouchDB account read and write this database.

    Apache CouchDB 3.x makes new databases admin-only already; naming the
    account keeps it so when an operator opens a database to members. Without
    configured credentials (the bundled server's admin party) there is nobody
    to name, so nothing is set.
    """
    user = db.server.username
    if not user:
        return
    wanted = {"admins": {"names": [user], "roles": []}, "members": {"names": [user], "roles": []}}
    try:
        current = db.server.get_json(f"{db.path}/_security")
        if current != wanted:
            db.server.request("PUT", f"{db.path}/_security", body=wanted)
    except CouchError as exc:  # e.g. an account that may write but not administer
        log.warning("cannot restrict %s to the app's account: %s", db.name, exc.error)


def is_legacy_layout(db: Database) -> bool:
    """True when the read model still holds the old layout: the old validator or any old event.

    Cheap enough for start-up (two reads): `init_database` refuses such a
    database and tells the operator to run `distleech migrate`.
    """
    if not db.server.database_exists(db.name):
        return False
    validator = db.get_or_none(LEGACY_VALIDATOR_ID)
    if validator is not None and "validate_doc_update" in validator:
        return True
    rows = db.server.get_json(
        f"{db.path}/_all_docs",
        startkey=EVENT_PREFIX,
        endkey=EVENT_PREFIX + "\ufff0",
        limit=1,
    )["rows"]
    return bool(rows)


def init_database(db: Database, *, warm: bool = True) -> list[str]:
    """Create the read model and the event log if missing and sync design docs.

    Returns the ids of the design documents written. Idempotent: nothing is
    written when the files and the stored docs agree. The log's design
    document carries the only validator; the read model has none, so its
    writes (projections, caches, checkpoints) cost no JavaScript per document.
    """
    if db.server.database_exists(db.name) and is_legacy_layout(db):
        raise LegacyLayoutError(
            f"database {db.name} has the old one-database layout (events and projections "
            "together): stop the app, the scheduler and the tracker, then run "
            "`distleech migrate` (README: Upgrading)"
        )
    changed = []
    for database, role in ((db, "main"), (event_log(db), "events")):
        ensure_database(database)
        docs = build_design_docs(database=role)
        changed += sync_design_docs(database, docs)
        if warm:
            warm_views(database, docs)
    restrict_to_app_account(db)
    init_secrets_database(db)
    return changed
