"""Credentials kept outside the event log: password hashes and token look-ups.

Why a database of its own (`db.companion("secrets")`, `<db>_secrets` by
default): events are immutable and replicate to every site, so a hash put in
an event would travel everywhere and could never be purged. The log records
only the facts (a user was created, a password changed: when and by whom);
the secrets database holds the one current credential of each user and
token. It never enters the log and is never rebuilt (nothing in it is
derived from events), and when the app has CouchDB credentials only that
account may read it (`_security`), so a member browsing the other databases
in Fauxton sees no hash. With other sites it replicates with theirs beside
the log (app/sites/accounts.py), so one account works at every site: only
the current documents travel, and every replacement is compacted away there
too.

Documents:
- `password_hash:<user name>` `{type, user, hash}`: a werkzeug (scrypt) hash.
- `session_hash:<sha256 of a session cookie>` `{type, user, csrf, expires_at}`:
  a browser session (app/accounts/sessions.py).
- `invite_hash:<sha256 of the invite's secret>` `{type, invite}`: the public id
  of the invite (`invite:<id>`, app/accounts/invites.py).
- `passkey:<user name>` `{type, user, passkey}`: a person's tracker passkey
  in the clear (app/accounts/people.py). It is a bearer secret that every
  `.torrent` the member downloads carries in its announce URL anyway, and the
  pages must put it there; the log and the read model keep only its SHA-256.
- `token_hash:<sha256 of the token>` `{type, token, name, role}`: `token` is
  the random public id of the token's aggregate `token:<id>`, which says
  nothing about the secret. Whether the token still works is the read
  model's `token:<id>` projection (revoked or not), never this document.

A changed or forgotten password must be unrecoverable, but CouchDB keeps the
body of a replaced revision until the database is compacted, so every
replacement is followed by `_compact`. Measured on the bundled pouchdb-server
4.2 (LevelDB): after an update, `GET ?revs_info=true` lists the old revision
as "available" and `GET ?rev=<old>` returns the old hash; right after
`POST /_compact` (202, done by the time it answers) the old revision is
"missing" and `?rev=<old>` answers 404 `missing`; a deleted document's last
body behaves the same. The bytes, however, stay in LevelDB's write-ahead log
file (`<db>/000003.log`) until LevelDB itself compacts it, which pouchdb-server
offers no way to trigger: on the bundled server the hash is gone from every
HTTP view of the data, not from the disk. Apache CouchDB compacts into a new
file and deletes the old one (`compact_running` in the database info says
when it is done; `compact_secrets` waits for it).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from app.store.couch import Database, DocumentConflictError, DocumentNotFoundError

PASSWORD_PREFIX = "password_hash:"
TOKEN_PREFIX = "token_hash:"
INVITE_PREFIX = "invite_hash:"
_ATTEMPTS = 5

_ready: set[tuple[str, str]] = set()  # (server url, name) of secrets databases set up
_ready_lock = threading.Lock()


class CredentialConflictError(Exception):
    """Other writers kept replacing the same credential document."""


def secrets_db(db: Database) -> Database:
    """The secrets database that belongs with the read model `db`."""
    return db.companion("secrets")


def token_sha256(token: str) -> str:
    """How a token is looked up: a token carries 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_id() -> str:
    """A random public id for a token's aggregate (64 bits: unique, and unrelated to the secret)."""
    return secrets.token_hex(8)


def init_secrets_database(db: Database) -> Database:
    """Create the secrets database if missing and keep it to the app's account; idempotent.

    Without configured CouchDB credentials (the bundled server's admin party)
    there is no account to name, so `_security` is left alone; Apache CouchDB
    3.x makes new databases admin-only anyway.
    """
    sdb = secrets_db(db)
    if not sdb.server.database_exists(sdb.name):
        try:
            sdb.server.create_database(sdb.name)
        except DocumentConflictError:
            pass  # another process created it at the same moment (412)
    user = sdb.server.username
    if user:
        wanted = {
            "admins": {"names": [user], "roles": []},
            "members": {"names": [user], "roles": []},
        }
        if sdb.server.get_json(f"{sdb.path}/_security") != wanted:
            sdb.server.request("PUT", f"{sdb.path}/_security", body=wanted)
    with _ready_lock:
        _ready.add((sdb.server_url, sdb.name))
    return sdb


def _prepared(db: Database) -> Database:
    """The secrets database, set up once per process before the first write."""
    sdb = secrets_db(db)
    with _ready_lock:
        ready = (sdb.server_url, sdb.name) in _ready
    return sdb if ready else init_secrets_database(db)


def _get(db: Database, doc_id: str) -> dict[str, Any] | None:
    """A secrets document, or None (also when the secrets database does not exist yet)."""
    try:
        return secrets_db(db).get(doc_id)
    except DocumentNotFoundError:
        return None


def _upsert(db: Database, doc_id: str, fields: dict[str, Any]) -> bool:
    """Make the document hold `fields`; return True when an older revision was replaced."""
    sdb = _prepared(db)
    for _ in range(_ATTEMPTS):
        current = sdb.get_or_none(doc_id)
        if current and all(current.get(k) == v for k, v in fields.items()):
            return False
        doc = {"_id": doc_id, **fields}
        if current:
            doc["_rev"] = current["_rev"]
        try:
            sdb.put(doc)
        except DocumentConflictError:
            continue
        except DocumentNotFoundError:  # the database was deleted under a running process
            sdb = init_secrets_database(db)
            continue
        return current is not None
    raise CredentialConflictError(f"{doc_id} kept changing; try again")


def compact_secrets(db: Database, *, wait_seconds: float = 10.0) -> None:
    """Drop the bodies of replaced revisions (old hashes) and wait until that is done.

    CouchDB compacts in the background (202); `compact_running` in the
    database info turns false when the old file is gone. pouchdb-server has
    finished when it answers and reports no such field.
    """
    compact_database(secrets_db(db), wait_seconds=wait_seconds)


def compact_database(sdb: Database, *, wait_seconds: float = 10.0) -> None:
    """Compact this secrets database (this site's or, when replicating, another's)."""
    sdb.server.request("POST", f"{sdb.path}/_compact")
    deadline = time.monotonic() + wait_seconds
    while sdb.info().get("compact_running") and time.monotonic() < deadline:
        time.sleep(0.1)


def set_password_hash(db: Database, user_name: str, password_hash: str) -> None:
    """Store a user's password hash; a hash it replaces is compacted away."""
    fields = {"type": "password_hash", "user": user_name, "hash": password_hash}
    if _upsert(db, PASSWORD_PREFIX + user_name, fields):
        compact_secrets(db)


def get_password_hash(db: Database, user_name: str) -> str | None:
    doc = _get(db, PASSWORD_PREFIX + user_name)
    return str(doc["hash"]) if doc else None


def forget_password(db: Database, user_name: str) -> bool:
    """Delete a user's password hash for good (compacted); return False if there was none."""
    sdb = secrets_db(db)
    for _ in range(_ATTEMPTS):
        doc = _get(db, PASSWORD_PREFIX + user_name)
        if doc is None:
            return False
        try:
            sdb.delete(doc["_id"], doc["_rev"])
        except (DocumentConflictError, DocumentNotFoundError):
            continue
        compact_secrets(db)
        return True
    raise CredentialConflictError(f"the password of {user_name!r} kept changing; try again")


PASSKEY_PREFIX = "passkey:"


def set_passkey(db: Database, user_name: str, passkey: str) -> None:
    """Store a person's current passkey; one it replaces is compacted away."""
    fields = {"type": "passkey", "user": user_name, "passkey": passkey}
    if _upsert(db, PASSKEY_PREFIX + user_name, fields):
        compact_secrets(db)


def get_passkey(db: Database, user_name: str) -> str | None:
    doc = _get(db, PASSKEY_PREFIX + user_name)
    return str(doc["passkey"]) if doc else None


def link_token(db: Database, token_sha256: str, token_id: str, name: str, role: str) -> None:
    """Map a token's SHA-256 to its public token id (without the `token:` prefix).

    Idempotent; linking a hash again to another id replaces the link (the
    last writer wins), so a resumed migration may re-link what it linked.
    """
    token_id = token_id.removeprefix("token:")
    fields = {"type": "token_hash", "token": token_id, "name": name, "role": role}
    _upsert(db, TOKEN_PREFIX + token_sha256, fields)


def find_token(db: Database, token_sha256: str) -> str | None:
    """The public id of the token with this SHA-256, or None if no token has it."""
    doc = _get(db, TOKEN_PREFIX + token_sha256)
    return str(doc["token"]) if doc else None


def link_invite(db: Database, invite_sha256: str, invite_id: str) -> None:
    """Map an invite's secret (its SHA-256) to the invite's public id."""
    _upsert(db, INVITE_PREFIX + invite_sha256, {"type": "invite_hash", "invite": invite_id})


def find_invite(db: Database, invite_sha256: str) -> str | None:
    """The public id of the invite with this secret, or None."""
    doc = _get(db, INVITE_PREFIX + invite_sha256)
    return str(doc["invite"]) if doc else None


SESSION_PREFIX = "session_hash:"


def put_session(db: Database, session_sha256: str, fields: dict[str, Any]) -> None:
    """Store a browser session under the SHA-256 of its cookie's secret."""
    _upsert(db, SESSION_PREFIX + session_sha256, {"type": "session", **fields})


def find_session(db: Database, session_sha256: str) -> dict[str, Any] | None:
    return _get(db, SESSION_PREFIX + session_sha256)


def drop_session(db: Database, session_sha256: str) -> None:
    """End a session (logout); nothing to do when it is gone already."""
    doc = _get(db, SESSION_PREFIX + session_sha256)
    if doc is not None:
        try:
            secrets_db(db).delete(doc["_id"], doc["_rev"])
        except (DocumentConflictError, DocumentNotFoundError):
            pass  # ended at the same moment elsewhere


def list_secret_documents(db: Database) -> list[dict[str, Any]]:
    """Every credential document (for checks and tests; never served over HTTP)."""
    try:
        return list(secrets_db(db).iter_prefix(""))
    except DocumentNotFoundError:  # no secrets database yet
        return []
