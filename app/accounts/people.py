"""People: a user is also a tracker member (a passkey), has a role, and can be disabled.

Roles, each including the one before: a `member` browses the inventory and
the torrents, downloads `.torrent`s with their passkey and sees their
profile; an `uploader` also uploads torrents; an `admin` manages everything.
A member an admin allows to (`can_invite`) may invite members too.

Every person is a tracker user (`trackeruser:<id>`, app/tracker/members.py)
whose id is derived from the name (`member_user_id`), so every site agrees
on it without asking. The passkey is issued at registration and by
rotation: the event carries its SHA-256 (as the Mika API's users), and the
secrets database keeps the passkey itself (app/accounts/credentials.py),
because the pages put it into the announce URL of every `.torrent` the
member downloads. The tracker follows the directory's projections, so it
refuses a rotated or disabled member's old passkey within a moment.

User events here: `changed` {role?, admin?, can_invite?}, `disabled` {},
`enabled` {}. A disabled person cannot log in (every session ends at its
next request) and their tracker user is deleted (totals kept); enabling
registers the tracker user again with the passkey they had.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from app.accounts import credentials
from app.accounts.auth import ADMIN, role_of, user_doc_id
from app.errors import UserNotFoundError, ValidationFailedError
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Doc
from app.tracker import members
from app.tracker.accounts import generate_passkey, tracker_user_doc_id

MEMBER, UPLOADER = "member", "uploader"
PERSON_ROLES = (MEMBER, UPLOADER, ADMIN)
ACTIVE, DISABLED, REMOVED = "active", "disabled", "removed"


def member_user_id(name: str) -> int:
    """The tracker user id of a person: 52 bits of a hash of the name, the same at every site.

    Below JavaScript's 2**53, like the registry's torrent ids. An id the Mika
    API chose for another user clashes with a given name 1 in 2**52.
    """
    return int(hashlib.sha256(f"user:{name}".encode()).hexdigest()[:13], 16)


def get_person(db: Database, name: str) -> Doc:
    """A user's projection, active or disabled; raise UserNotFoundError otherwise."""
    doc = db.get_or_none(user_doc_id(name)) if name else None
    if not doc or doc.get("state") not in (ACTIVE, DISABLED):
        raise UserNotFoundError(f"No user {name!r}.", user=name)
    return doc


def list_people(db: Database) -> list[Doc]:
    """Every user who is not removed, by name."""
    docs = [doc for doc in db.iter_prefix("user:") if doc.get("type") == "user"]
    return sorted(
        (doc for doc in docs if doc.get("state") in (ACTIVE, DISABLED)), key=lambda d: d["name"]
    )


def list_people_shown(db: Database) -> list[dict[str, Any]]:
    """Every person as `public_person` shows them, tracker totals read in one request."""
    docs = list_people(db)
    tracked = db.get_many(tracker_user_doc_id(member_user_id(d["name"])) for d in docs)
    return [
        public_person(d, tracked.get(tracker_user_doc_id(member_user_id(d["name"])))) for d in docs
    ]


def issue_passkey(db: Database, name: str, *, actor: str, now: datetime) -> str:
    """Give an active person a new passkey (the first, or a rotation); return it.

    The passkey is stored before the tracker hears of it: a crash in between
    leaves a stored passkey the tracker refuses, which the next rotation
    mends; the other order would leave a working passkey nobody can see.
    """
    person = get_person(db, name)
    if person["state"] != ACTIVE:
        raise ValidationFailedError(f"{name} is disabled; enable them first.", user=name)
    passkey = generate_passkey()
    credentials.set_passkey(db, name, passkey)
    _track(db, name, passkey, actor=actor, now=now)
    return passkey


def _track(db: Database, name: str, passkey: str, *, actor: str, now: datetime) -> None:
    """Make the person's tracker user active with this passkey, while the person is.

    The person and their tracker user are two aggregates: a disable that lands
    between the check and this write would leave a disabled person's passkey
    working, so the person is read again after it, and their tracker user
    deleted if they were disabled meanwhile.
    """
    user_id = member_user_id(name)
    current = db.get_or_none(tracker_user_doc_id(user_id))
    if current and current.get("active"):
        members.update_user(db, user_id, passkey=passkey, actor=actor, now=now)
    else:
        members.register_user(db, user_id, name=name, passkey=passkey, actor=actor, now=now)
    if get_person(db, name)["state"] != ACTIVE:
        tracked = tracker_member(db, name)
        if tracked and tracked.get("active"):
            members.delete_user(db, user_id, actor=actor, now=now)


def get_passkey(db: Database, name: str) -> str | None:
    """The person's passkey in the clear (for their pages), or None if none was issued."""
    return credentials.get_passkey(db, name)


def tracker_member(db: Database, name: str) -> Doc | None:
    """The projection of the person's tracker user (totals), or None."""
    return db.get_or_none(tracker_user_doc_id(member_user_id(name)))


def change_person(
    db: Database,
    name: str,
    *,
    role: str | None = None,
    can_invite: bool | None = None,
    actor: str,
    now: datetime,
) -> Doc:
    """Change a person's role or right to invite; record only what differs."""
    wanted: dict[str, Any] = {}
    if role is not None:
        if role not in PERSON_ROLES:
            raise ValidationFailedError(f"A role is one of {', '.join(PERSON_ROLES)}.")
        wanted.update(role=role, admin=role == ADMIN)
    if can_invite is not None:
        wanted["can_invite"] = bool(can_invite)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not state or state.get("state") not in (ACTIVE, DISABLED):
            return None
        known = {**state, "role": role_of(state)}
        changed = {k: v for k, v in wanted.items() if known.get(k, False) != v}
        return ("changed", changed) if changed else None

    [outcome] = commit(db, [(user_doc_id(name), decide)], actor=actor, now=now)
    if not outcome.state or outcome.state.get("state") not in (ACTIVE, DISABLED):
        raise UserNotFoundError(f"No user {name!r}.", user=name)
    return outcome.state


def disable_person(db: Database, name: str, *, actor: str, now: datetime) -> Doc:
    """Disable a person: no login, no session, and the tracker refuses their passkey."""
    doc = _set_state(db, name, "disabled", ACTIVE, actor=actor, now=now)
    tracked = tracker_member(db, name)
    if tracked and tracked.get("active"):
        members.delete_user(db, tracked["user_id"], actor=actor, now=now)
    return doc


def enable_person(db: Database, name: str, *, actor: str, now: datetime) -> Doc:
    """Enable a disabled person again; their passkey works again (a new one if none was kept)."""
    doc = _set_state(db, name, "enabled", DISABLED, actor=actor, now=now)
    passkey = credentials.get_passkey(db, name)
    if passkey is None:
        issue_passkey(db, name, actor=actor, now=now)
    else:
        _track(db, name, passkey, actor=actor, now=now)
    return doc


def _set_state(
    db: Database, name: str, event: str, from_state: str, *, actor: str, now: datetime
) -> Doc:
    """Record `event` if the user is in `from_state`; a repeat changes nothing."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return (event, {}) if state and state.get("state") == from_state else None

    [outcome] = commit(db, [(user_doc_id(name), decide)], actor=actor, now=now)
    if not outcome.state or outcome.state.get("state") not in (ACTIVE, DISABLED):
        raise UserNotFoundError(f"No user {name!r}.", user=name)
    return outcome.state


def public_person(doc: Doc, tracked: Doc | None = None) -> dict[str, Any]:
    """A person as the API shows them: name, role, state, rights and tracker totals."""
    shown: dict[str, Any] = {
        "name": doc["name"],
        "role": role_of(doc),
        "state": doc["state"],
        "can_invite": bool(doc.get("can_invite")) or role_of(doc) == ADMIN,
    }
    if tracked is not None:
        uploaded, downloaded = tracked.get("uploaded", 0), tracked.get("downloaded", 0)
        shown.update(
            tracker_user_id=tracked["user_id"],
            uploaded=uploaded,
            downloaded=downloaded,
            ratio=round(uploaded / downloaded, 3) if downloaded else None,
            snatches=tracked.get("snatches", 0),
        )
    return shown
