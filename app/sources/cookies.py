"""A source's cookies (Netscape cookies.txt text): a secret, kept in the secrets database.

Why not in an event: cookies log in as someone at the remote site, events
are immutable and replicate to every site, and the read model is readable by
anyone with database access (Fauxton). So the log records only that cookies
were set or removed (`cookies_set`, `cookies_removed` on the source) and the
text lives in `source_cookies:<source id>` `{type, source, cookies}` in the
secrets database (app/accounts/credentials.py), which only the app's account
reads. A replaced or removed text is compacted away, as a password hash is.
The worker that leases a sync order gets the text (GET /api/sources/next),
because gallery-dl needs it; nobody else is ever shown it.
"""

from __future__ import annotations

from app.accounts import credentials
from app.store.couch import Database, DocumentConflictError, DocumentNotFoundError

PREFIX = "source_cookies:"
DOC_TYPE = "source_cookies"
_ATTEMPTS = 5


class CookiesConflictError(Exception):
    """Other writers kept replacing the same source's cookies."""


def cookies_doc_id(source_id: str) -> str:
    """The secrets database's document of a source's cookies."""
    return PREFIX + source_id


def _secrets(db: Database) -> Database:
    """The secrets database, created (and kept to the app's account) if missing."""
    sdb = credentials.secrets_db(db)
    if not sdb.server.database_exists(sdb.name):
        credentials.init_secrets_database(db)
    return sdb


def get_cookies(db: Database, source_id: str) -> str | None:
    """The source's cookies text, or None when it has none."""
    sdb = credentials.secrets_db(db)
    try:
        doc = sdb.get(cookies_doc_id(source_id))
    except DocumentNotFoundError:  # no such document, or no secrets database yet
        return None
    return str(doc["cookies"])


def set_cookies(db: Database, source_id: str, text: str) -> bool:
    """Store the source's cookies; return True when they changed (and compact the old ones)."""
    sdb = _secrets(db)
    doc_id = cookies_doc_id(source_id)
    for _ in range(_ATTEMPTS):
        current = sdb.get_or_none(doc_id)
        if current is not None and current.get("cookies") == text:
            return False
        doc = {"_id": doc_id, "type": DOC_TYPE, "source": source_id, "cookies": text}
        if current is not None:
            doc["_rev"] = current["_rev"]
        try:
            sdb.put(doc)
        except DocumentConflictError:
            continue
        if current is not None:
            credentials.compact_secrets(db)  # the replaced text must not stay readable
        return True
    raise CookiesConflictError(f"the cookies of {source_id!r} kept changing; try again")


def remove_cookies(db: Database, source_id: str) -> bool:
    """Delete the source's cookies for good (compacted); return False when it had none."""
    sdb = credentials.secrets_db(db)
    for _ in range(_ATTEMPTS):
        try:
            current = sdb.get(cookies_doc_id(source_id))
            sdb.delete(current["_id"], current["_rev"])
        except DocumentNotFoundError:
            return False
        except DocumentConflictError:
            continue
        credentials.compact_secrets(db)
        return True
    raise CookiesConflictError(f"the cookies of {source_id!r} kept changing; try again")
