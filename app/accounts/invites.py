"""One-time invites (Fairywren's): a secret link that lets one person register.

An admin creates an invite with a role and an expiry; the secret is shown
once and stored only as its SHA-256 in the secrets database (the link from
secret to invite, like a token's). The invite is an aggregate
`invite:<random public id>`:
- `created` {inviter, role, expires_at}, then `used` {user} or `revoked`.

Registering through it issues the member's tracker passkey
(app/accounts/people.py) and is one command over two aggregates, recorded in one
event: the invite is used and the user created. The invite's projection is
the point of decision (a second registration with the same secret finds it
used); a name someone took meanwhile puts the invite back (`reopened`), and
an invite used meanwhile removes the user just created, so an invite never
makes two users and never is lost to a failed registration.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from werkzeug.security import generate_password_hash

from app.accounts import credentials, people
from app.accounts.auth import ADMIN, check_name, check_password, role_of, user_doc_id
from app.errors import (
    AlreadyExistsError,
    InvalidInviteError,
    NotFoundError,
    ValidationFailedError,
)
from app.store.commit import always, commit
from app.store.couch import Database
from app.store.events import Doc
from app.timeutil import iso

OPEN, USED, REVOKED = "open", "used", "revoked"
INVITE_ROLES = ("member", "uploader", "admin")
MAX_DAYS = 90


def invite_doc_id(invite_id: str) -> str:
    return f"invite:{invite_id}"


def apply_invite_event(state: Doc, event: Doc) -> None:
    name, data = event["name"], event["data"]
    if name == "created":
        state.update(data, created_at=event["at"], state=OPEN, user=None)  # inviter, role, expiry
    elif name == "used":
        state.update(state=USED, user=data["user"], used_at=event["at"])
    elif name == "reopened":
        state.update(state=OPEN, user=None, used_at=None)
    elif name == "revoked":
        state.update(state=REVOKED)


def create_invite(
    db: Database, *, inviter: str, role: str = "member", days: float = 7, now: datetime
) -> tuple[str, Doc]:
    """Create an invite; return (secret, projection). The secret is never shown again."""
    if role not in INVITE_ROLES:
        raise ValidationFailedError(f"An invite's role is one of {', '.join(INVITE_ROLES)}.")
    if not 0 < days <= MAX_DAYS:
        raise ValidationFailedError(f"An invite lasts more than 0 and at most {MAX_DAYS} days.")
    secret, invite_id = secrets.token_urlsafe(24), secrets.token_hex(8)
    # the link first: a crash before the event leaves a link to no invite, which admits nobody
    credentials.link_invite(db, credentials.token_sha256(secret), invite_id)
    data = {"inviter": inviter, "role": role, "expires_at": iso(now + timedelta(days=days))}

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("created", data) if state is None else None

    [outcome] = commit(db, [(invite_doc_id(invite_id), decide)], actor=inviter, now=now)
    if not outcome.recorded or outcome.state is None:  # 64 random bits collided
        raise RuntimeError(f"invite id {invite_id} is taken; create the invite again")
    return secret, outcome.state


def register(db: Database, secret: str, name: str, password: str, *, now: datetime) -> Doc:
    """Create the invited user with this name and password; return the user's projection.

    Raises InvalidInviteError (unknown, used, revoked or expired invite),
    AlreadyExistsError (the name is taken: the invite stays open), or the
    name and password rules' errors.
    """
    check_name(name)
    check_password(password, name)
    invite_id = credentials.find_invite(db, credentials.token_sha256(secret))
    invite = db.get_or_none(invite_doc_id(invite_id)) if invite_id else None
    _check_open(invite, now)
    assert invite is not None and invite_id is not None
    _check_inviter(db, invite)
    if (db.get_or_none(user_doc_id(name)) or {}).get("state", "removed") != "removed":
        raise AlreadyExistsError(f"The name {name!r} is taken; choose another.", user=name)
    created = {"name": name, "admin": invite["role"] == "admin", "role": invite["role"]}

    def use(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("used", {"user": name}) if _is_open(state, now) else None

    def create(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("created", created) if not state or state.get("state") == "removed" else None

    actor = f"invite:{invite_id}"
    invite_out, user_out = commit(
        db,
        [(invite_doc_id(invite_id), use), (user_doc_id(name), create)],
        actor=actor,
        now=now,
        command="registered",
    )
    if invite_out.recorded and user_out.recorded:
        credentials.set_password_hash(db, name, generate_password_hash(password))
        people.issue_passkey(db, name, actor=actor, now=now)
        assert user_out.state is not None
        return user_out.state
    _undo(db, invite_out.recorded, user_out.recorded, invite_id, name, actor, now)
    if not user_out.recorded:
        raise AlreadyExistsError(f"The name {name!r} is taken; choose another.", user=name)
    raise InvalidInviteError("This invite was used a moment ago.")


def _undo(
    db: Database,
    invite_used: bool,
    user_created: bool,
    invite_id: str,
    name: str,
    actor: str,
    now: datetime,
) -> None:
    """Half a registration happened (a race): put back what it changed, as one event."""
    undo = [(invite_doc_id(invite_id), always("reopened", {}))] if invite_used else []
    undo += [(user_doc_id(name), always("removed", {}))] if user_created else []
    if undo:
        commit(db, undo, actor=actor, now=now)


def _is_open(invite: Doc | None, now: datetime) -> bool:
    return invite is not None and invite.get("state") == OPEN and invite["expires_at"] > iso(now)


def _check_inviter(db: Database, invite: Doc) -> None:
    """An invite works only while its inviter may still give its role.

    An admin disabled, demoted or removed (or a member who lost the right to
    invite) takes their open invites with them. Invites made from the
    command line (`cli:<account>`) are an operator's and have no user.
    """
    inviter = db.get_or_none(user_doc_id(invite["inviter"]))
    if inviter is None and invite["inviter"].split(":", 1)[0] == "cli":
        return
    active: Doc = inviter if inviter is not None and inviter.get("state") == "active" else {}
    if active and role_of(active) == ADMIN:
        return
    if active.get("can_invite") and invite["role"] == "member":
        return
    raise InvalidInviteError("Whoever made this invite may no longer invite; ask for a new link.")


def _check_open(invite: Doc | None, now: datetime) -> None:
    if invite is None:
        raise InvalidInviteError("No invite has this secret; ask for a new link.")
    if invite.get("state") == USED:
        raise InvalidInviteError("This invite has been used; ask for a new link.")
    if invite.get("state") == REVOKED:
        raise InvalidInviteError("This invite was revoked; ask for a new link.")
    if not _is_open(invite, now):
        raise InvalidInviteError("This invite has expired; ask for a new link.")


def revoke_invite(db: Database, invite_id: str, *, actor: str, now: datetime) -> Doc:
    """Revoke an open invite; return its projection (NotFound-like error if unknown)."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("revoked", {}) if state and state.get("state") == OPEN else None

    [outcome] = commit(db, [(invite_doc_id(invite_id), decide)], actor=actor, now=now)
    if outcome.state is None:
        raise NotFoundError(f"No invite {invite_id!r}.")
    return outcome.state


def list_invites(db: Database) -> list[Doc]:
    """Every invite, newest first (no secret: they are never stored)."""
    invites = [doc for doc in db.iter_prefix("invite:") if doc.get("type") == "invite"]
    return sorted(invites, key=lambda doc: doc.get("created_at", ""), reverse=True)


def public_invite(doc: Doc) -> dict[str, Any]:
    keys = ("inviter", "role", "state", "expires_at", "created_at", "user", "used_at")
    return {"id": doc["_id"].split(":", 1)[1], **{key: doc.get(key) for key in keys}}
