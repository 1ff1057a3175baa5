"""The tracker's members: users with a passkey, their rights and what they snatched.

Part of the tracker's directory (app/tracker/accounts.py holds the ids, the
checks, the projections, tracked torrents and the client whitelist).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.errors import (
    PasskeyTakenError,
    TrackerUserExistsError,
    TrackerUserNotFoundError,
)
from app.store.couch import Database
from app.store.events import (
    LOG_DDOC,
    Doc,
    event_log,
)
from app.tracker.accounts import (
    PASSKEY_PATTERN,
    check_name,
    check_passkey,
    check_user_id,
    commit_one,
    generate_passkey,
    hash_passkey,
    tracker_user_doc_id,
)


def check_passkey_free(db: Database, passkey_sha256: str, user_id: int) -> None:
    """Refuse a passkey that another active user holds.

    Checked through a view before the commit, so two requests racing with the
    same passkey for two users can both pass; with generated passkeys (128
    random bits) that cannot happen, with chosen ones the site chose twice.
    """
    rows = db.view("tracker", "users_by_passkey", key=passkey_sha256)
    if any(row["value"] != user_id for row in rows):
        raise PasskeyTakenError("Another user has this passkey.", field="passkey")


def register_user(
    db: Database,
    user_id: int,
    *,
    name: str,
    can_leech: bool = True,
    passkey: str | None = None,
    actor: str,
    now: datetime,
) -> tuple[Doc, str]:
    """Add a tracker user; return (projection, passkey). Without a passkey one is generated.

    The passkey is returned so that it can be shown once: only its hash is
    stored. A deleted user may be registered again (their totals stay).
    Raises TrackerUserExistsError, PasskeyTakenError, InvalidPasskeyError.
    """
    user_id = check_user_id(user_id)
    passkey = generate_passkey() if passkey is None else check_passkey(passkey)
    passkey_sha256 = hash_passkey(passkey)
    data = {
        "passkey_sha256": passkey_sha256,
        "can_leech": bool(can_leech),
        "name": check_name(name),
    }
    check_passkey_free(db, passkey_sha256, user_id)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state and state["active"] else ("registered", data)

    outcome = commit_one(db, tracker_user_doc_id(user_id), decide, actor, now)
    if not outcome.recorded:
        raise TrackerUserExistsError(f"Tracker user {user_id} exists.", user_id=user_id)
    assert outcome.state is not None
    return outcome.state, passkey


def update_user(
    db: Database,
    user_id: int,
    *,
    name: str | None = None,
    can_leech: bool | None = None,
    passkey: str | None = None,
    actor: str,
    now: datetime,
) -> Doc:
    """Change a user's name, leech right or passkey; record only what differs."""
    user_id = check_user_id(user_id)
    wanted: dict[str, Any] = {}
    if name is not None:
        wanted["name"] = check_name(name)
    if can_leech is not None:
        wanted["can_leech"] = bool(can_leech)
    if passkey is not None:
        wanted["passkey_sha256"] = hash_passkey(check_passkey(passkey))
        check_passkey_free(db, wanted["passkey_sha256"], user_id)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not state or not state["active"]:
            return None
        changed = {k: v for k, v in wanted.items() if state.get(k) != v}
        return ("updated", changed) if changed else None

    outcome = commit_one(db, tracker_user_doc_id(user_id), decide, actor, now)
    if not outcome.state or not outcome.state.get("active"):
        raise _no_user(user_id)
    return outcome.state


def delete_user(db: Database, user_id: int, *, actor: str, now: datetime) -> Doc:
    """Delete a tracker user: their passkey stops working at once; totals are kept."""
    user_id = check_user_id(user_id)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("deleted", {}) if state and state["active"] else None

    outcome = commit_one(db, tracker_user_doc_id(user_id), decide, actor, now)
    if not outcome.recorded:
        raise _no_user(user_id)
    assert outcome.state is not None
    return outcome.state


def get_tracker_user(db: Database, user_id: int) -> Doc:
    """The projection of an active user; raise TrackerUserNotFoundError otherwise."""
    user_id = check_user_id(user_id)
    doc = db.get_or_none(tracker_user_doc_id(user_id))
    if not doc or not doc.get("active"):
        raise _no_user(user_id)
    return doc


def find_user_by_passkey(db: Database, passkey: str) -> Doc | None:
    """The active user holding this passkey, or None (also for a malformed passkey)."""
    if not isinstance(passkey, str) or not PASSKEY_PATTERN.match(passkey):
        return None
    rows = db.view("tracker", "users_by_passkey", key=hash_passkey(passkey), include_docs=True)
    docs = [row["doc"] for row in rows if row.get("doc") and row["doc"].get("active")]
    return docs[0] if docs else None


def list_snatched(db: Database, user_id: int) -> list[dict[str, Any]]:
    """The torrents a user completed, [{info_hash, at}] (the latest time of each), by hash."""
    rows = event_log(db).view(
        LOG_DDOC, "snatches_by_user", startkey=[user_id], endkey=[user_id, {}]
    )
    latest: dict[str, str] = {}
    for row in rows:
        latest[row["key"][1]] = max(latest.get(row["key"][1], ""), row["value"])
    return [{"info_hash": ih, "at": at} for ih, at in sorted(latest.items())]


def public_user(doc: Doc) -> dict[str, Any]:
    """A tracker user as the API shows them: never the passkey, not even its hash."""
    return {
        "user_id": doc["user_id"],
        "name": doc["name"],
        "can_leech": doc["can_leech"],
        "uploaded": doc["uploaded"],
        "downloaded": doc["downloaded"],
        "snatches": doc["snatches"],
    }


def _no_user(user_id: int) -> TrackerUserNotFoundError:
    return TrackerUserNotFoundError(f"No tracker user {user_id}.", user_id=user_id)
