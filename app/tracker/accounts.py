"""The tracker's directory: tracked torrents, tracker users and the client whitelist.

Ordinary event-sourced state (events in the log, projections in the read
model, so it replicates and rebuilds like everything else), managed through
the Mika-style API and the `distleech tracker` CLI, and read by the tracker
process:

- `tracked:<info hash>`: `registered` {torrent_id, name, source: "api"|"registry"},
  `unregistered` {}, `snatched` {users: [user_id, …]}.
- `trackeruser:<user_id>`: `registered` {passkey_sha256, can_leech, name},
  `updated` {changed fields}, `deleted` {}, `transferred` {uploaded, downloaded,
  snatched: [info_hash, …], batch, from, until, reason}: a summary of an hour,
  of a session that stopped, or of the time until a clean shutdown.
- `whitelist:<prefix>`: `added` {client}, `removed` {}.

Passkeys are stored only as their SHA-256 (like tokens: they are random, so a
fast hash is enough); the plaintext is shown once, when it is created. The
tracker process loads the projections (`iter_directory_docs`) and then follows
`_changes?filter=tracker/directory&include_docs=true`, which passes exactly
these projection documents; it reports traffic back as summaries through its
write-behind's tallies (app/tracker/activity.py), and snatches of torrents at
the flush that saw them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Any

from app.errors import (
    InvalidInfoHashError,
    InvalidPasskeyError,
    InvalidPrefixError,
    InvalidTorrentIdError,
    InvalidUserIdError,
    TorrentAlreadyTrackedError,
    TorrentIdTakenError,
    TorrentNotTrackedError,
    ValidationFailedError,
    WhitelistEntryExistsError,
    WhitelistEntryNotFoundError,
)
from app.ids import MAX_SAFE_INT
from app.store.commit import Outcome, check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc

TRACKED, TRACKER_USER, WHITELIST = "tracked", "trackeruser", "whitelist"
SOURCE_API, SOURCE_REGISTRY = "api", "registry"
MAX_NAME_CHARS = 1000
MAX_PREFIX_CHARS = 20  # a peer_id is 20 bytes
PASSKEY_HELP = "16 to 64 letters and digits"
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
PASSKEY_PATTERN = re.compile(r"^[A-Za-z0-9]{16,64}$")
# Printable ASCII without space, '/' (it separates URL path parts) and '\'.
_PREFIX = re.compile(rf"^[!-.0-\[\]-~]{{1,{MAX_PREFIX_CHARS}}}$")

# ---------------------------------------------------------------- ids and checks


def tracked_doc_id(info_hash: str) -> str:
    return f"{TRACKED}:{info_hash}"


def tracker_user_doc_id(user_id: int) -> str:
    return f"{TRACKER_USER}:{user_id}"


def whitelist_doc_id(prefix: str) -> str:
    return f"{WHITELIST}:{prefix}"


def hash_passkey(passkey: str) -> str:
    """The stored form of a passkey (SHA-256 hex); the tracker hashes what clients send."""
    return hashlib.sha256(passkey.encode("utf-8")).hexdigest()


def generate_passkey() -> str:
    """A new random passkey: 32 hex digits (128 bits), the usual private-tracker length."""
    return secrets.token_hex(16)


def registry_torrent_id(info_hash: str) -> int:
    """The torrent id of a torrent registered from distleech's registry, stable everywhere.

    52 bits of the info hash: below JavaScript's 2**53, and the same on every
    site, so replicating sites agree without asking each other.
    """
    return int(info_hash[:13], 16)


def check_info_hash(raw: Any) -> str:
    """40 hex digits, returned lower-case; raise InvalidInfoHashError otherwise.

    The same rule as app.registry.keys.check_info_hash, kept here so that
    app.registry can import this module without a cycle.
    """
    if not isinstance(raw, str) or not _HEX40.match(raw.strip()):
        raise InvalidInfoHashError(
            f"An info hash is 40 hexadecimal digits, got {str(raw)[:60]!r}.", info_hash=raw
        )
    return raw.strip().lower()


def check_passkey(raw: Any) -> str:
    if not isinstance(raw, str) or not PASSKEY_PATTERN.match(raw):
        raise InvalidPasskeyError(f"A passkey is {PASSKEY_HELP}.", field="passkey")
    return raw


def check_user_id(raw: Any) -> int:
    """A tracker user id: a whole number from 0 (the site's primary key), as int or digits."""
    value = raw
    if isinstance(raw, str):
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 16 else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INT:
        raise InvalidUserIdError(
            f"A user id is a whole number from 0 to {MAX_SAFE_INT}.", user_id=str(raw)[:60]
        )
    return value


def check_torrent_id(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_SAFE_INT:
        raise InvalidTorrentIdError(
            f"torrent_id is a whole number from 0 to {MAX_SAFE_INT}.", field="torrent_id"
        )
    return raw


def check_prefix(raw: Any) -> str:
    if not isinstance(raw, str) or not _PREFIX.match(raw):
        raise InvalidPrefixError(
            f"A client prefix is 1 to {MAX_PREFIX_CHARS} printable ASCII characters "
            "without spaces, '/' or '\\' (the start of a peer_id, like -qB or -TR).",
            prefix=str(raw)[:60],
        )
    return raw


def check_name(raw: Any, field: str = "name") -> str:
    if not isinstance(raw, str) or len(raw) > MAX_NAME_CHARS:
        raise ValidationFailedError(
            f"{field} must be text of at most {MAX_NAME_CHARS} characters.", field=field
        )
    return raw.strip()


# ---------------------------------------------------------------- projections


def apply_tracked_event(state: Doc, event: Doc) -> None:
    if "info_hash" not in state:
        state.update(
            info_hash=event["aggregate"].split(":", 1)[1],
            torrent_id=None,
            name=None,
            source=None,
            registered=False,
            registered_at=None,
            snatches=0,
            last_batch=None,  # the tracker's flush that last recorded snatches
        )
    name, data = event["name"], event["data"]
    if name == "registered":
        state.update(
            torrent_id=data["torrent_id"], name=data["name"], source=data["source"], registered=True
        )
        state["registered_at"] = event["at"]
    elif name == "unregistered":
        state["registered"] = False
    elif name == "snatched":
        if data.get("batch") and data["batch"] == state.get("last_batch"):
            return  # recorded twice (an append retried): counted once
        state["snatches"] += len(data["users"])
        state["last_batch"] = data.get("batch")


def apply_tracker_user_event(state: Doc, event: Doc) -> None:
    if "user_id" not in state:
        state.update(
            user_id=int(event["aggregate"].split(":", 1)[1]),
            name=None,
            can_leech=True,
            passkey_sha256=None,
            active=False,
            uploaded=0,
            downloaded=0,
            snatches=0,
            last_batch=None,  # the tracker's flush that last recorded traffic
        )
    name, data = event["name"], event["data"]
    if name == "registered":
        state.update(data, active=True)
    elif name == "updated":
        state.update(data)
    elif name == "deleted":
        state["active"] = False  # totals stay: they are history, and a re-registration keeps them
    elif name == "transferred":
        if data.get("batch") and data["batch"] == state.get("last_batch"):
            return  # the same summary recorded twice (an append retried): counted once
        state["uploaded"] += data["uploaded"]
        state["downloaded"] += data["downloaded"]
        state["snatches"] += len(data["snatched"])
        state["last_batch"] = data.get("batch")


def apply_whitelist_event(state: Doc, event: Doc) -> None:
    if "prefix" not in state:
        state.update(prefix=event["aggregate"].split(":", 1)[1], client=None, active=False)
    if event["name"] == "added":
        state.update(client=event["data"]["client"], active=True)
    elif event["name"] == "removed":
        state["active"] = False


# ---------------------------------------------------------------- torrents


def check_torrent_id_free(db: Database, torrent_id: int, info_hash: str) -> None:
    """Refuse a torrent id that another registered torrent holds.

    Checked through a view before the commit: two requests racing with the
    same id for two info hashes can both pass (the aggregates differ, so no
    event id collides). The admin API is the only writer of chosen ids, so
    the window is accepted; registry ids come from the info hash itself.
    """
    rows = db.view("tracker", "torrents_by_id", key=torrent_id)
    others = [row["value"]["info_hash"] for row in rows if row["id"] != tracked_doc_id(info_hash)]
    if others:
        raise TorrentIdTakenError(
            f"torrent_id {torrent_id} is registered for another info hash.",
            torrent_id=torrent_id,
            info_hash=others[0],
        )


def register_torrent(
    db: Database,
    info_hash: str,
    torrent_id: int,
    name: str,
    *,
    source: str = SOURCE_API,
    actor: str,
    now: datetime,
) -> Doc:
    """Let the tracker serve a torrent; return its projection.

    Raises TorrentAlreadyTrackedError when it is registered already (an
    unregistered one may come back), TorrentIdTakenError for a taken id.
    """
    info_hash, torrent_id = check_info_hash(info_hash), check_torrent_id(torrent_id)
    data = {"torrent_id": torrent_id, "name": check_name(name), "source": source}
    check_torrent_id_free(db, torrent_id, info_hash)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state and state["registered"] else ("registered", data)

    outcome = commit_one(db, tracked_doc_id(info_hash), decide, actor, now)
    if not outcome.recorded:
        raise TorrentAlreadyTrackedError(
            f"{info_hash} is registered already; DELETE it first to change it.",
            info_hash=info_hash,
        )
    assert outcome.state is not None
    return outcome.state


def unregister_torrent(db: Database, info_hash: str, *, actor: str, now: datetime) -> Doc:
    """Stop tracking a torrent (announces are refused from then on); raise if not tracked."""
    info_hash = check_info_hash(info_hash)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("unregistered", {}) if state and state["registered"] else None

    outcome = commit_one(db, tracked_doc_id(info_hash), decide, actor, now)
    if not outcome.recorded:
        raise _not_tracked(info_hash)
    assert outcome.state is not None
    return outcome.state


def registry_decision(info_hash: str, name: str) -> tuple[str, Decision]:
    """The decision that registers a torrent of distleech's own registry with the tracker.

    Only when no `tracked:` aggregate exists: a torrent an admin unregistered
    stays unregistered, whatever is uploaded later. The id is derived, not
    checked against the view (one more read per upload); a clash with an id
    an admin chose is 1 in 2**52 per pair.
    """
    data = {
        "torrent_id": registry_torrent_id(info_hash),
        "name": name[:MAX_NAME_CHARS],
        "source": SOURCE_REGISTRY,
    }

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state else ("registered", data)

    return tracked_doc_id(info_hash), decide


def get_tracked_torrent(db: Database, info_hash: str) -> Doc:
    """The projection of a registered torrent; raise TorrentNotTrackedError otherwise."""
    info_hash = check_info_hash(info_hash)
    doc = db.get_or_none(tracked_doc_id(info_hash))
    if not doc or not doc.get("registered"):
        raise _not_tracked(info_hash)
    return doc


def list_tracked_torrents(db: Database) -> list[dict[str, Any]]:
    """Every registered torrent as {info_hash, torrent_id, snatches}, by torrent id."""
    return [
        {"info_hash": row["value"]["info_hash"], "torrent_id": row["key"]}
        | {"snatches": row["value"]["snatches"]}
        for row in db.iter_view("tracker", "torrents_by_id")
    ]


def public_tracked(doc: Doc) -> dict[str, Any]:
    return {
        "info_hash": doc["info_hash"],
        "torrent_id": doc["torrent_id"],
        "name": doc["name"],
        "source": doc["source"],
        "snatches": doc["snatches"],
        "registered_at": doc.get("registered_at"),
    }


def _not_tracked(info_hash: str) -> TorrentNotTrackedError:
    return TorrentNotTrackedError(f"The tracker does not track {info_hash}.", info_hash=info_hash)


# ---------------------------------------------------------------- whitelist


def add_whitelist_entry(
    db: Database, prefix: str, client: str, *, actor: str, now: datetime
) -> Doc:
    """Allow clients whose peer_id starts with prefix; raise WhitelistEntryExistsError if listed."""
    prefix, data = check_prefix(prefix), {"client": check_name(client, "client")}

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state and state["active"] else ("added", data)

    outcome = commit_one(db, whitelist_doc_id(prefix), decide, actor, now)
    if not outcome.recorded:
        raise WhitelistEntryExistsError(f"{prefix!r} is on the whitelist.", prefix=prefix)
    assert outcome.state is not None
    return outcome.state


def remove_whitelist_entry(db: Database, prefix: str, *, actor: str, now: datetime) -> Doc:
    prefix = check_prefix(prefix)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("removed", {}) if state and state["active"] else None

    outcome = commit_one(db, whitelist_doc_id(prefix), decide, actor, now)
    if not outcome.recorded:
        raise WhitelistEntryNotFoundError(f"{prefix!r} is not on the whitelist.", prefix=prefix)
    assert outcome.state is not None
    return outcome.state


def list_whitelist(db: Database) -> list[dict[str, Any]]:
    """The active whitelist as [{prefix, client}], by prefix (empty: every client may announce)."""
    return [
        {"prefix": doc["prefix"], "client": doc["client"]}
        for doc in db.iter_prefix(f"{WHITELIST}:")
        if doc.get("type") == WHITELIST and doc.get("active")
    ]


# ---------------------------------------------------------------- commit


def commit_one(
    db: Database, aggregate: str, decide: Decision, actor: str, now: datetime
) -> Outcome:
    [outcome] = commit(db, [(aggregate, decide)], actor=actor, now=now)
    check_none_lost([outcome])
    return outcome
