"""People over HTTP: your own profile and passkey; admins manage everyone.

GET /api/profile and POST /api/profile/passkey: any person (member, uploader,
admin) about themselves. GET /api/users and PATCH /api/users/<name>: admins.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.accounts import people
from app.accounts.auth import ADMIN, MEMBER, Principal, current_principal, requires
from app.api.tracker import announce_base
from app.api.web import checked_body, context, object_schema
from app.errors import ForbiddenError
from app.store.events import Doc
from app.tracker import peersdb

bp = Blueprint("people", __name__)

CHANGE_BODY = object_schema(
    {
        "role": {"enum": list(people.PERSON_ROLES)},
        "can_invite": {"type": "boolean"},
        "disabled": {"type": "boolean"},
    },
    [],
)


def profile_of(name: str) -> dict[str, Any]:
    """What a person's profile shows: rights, tracker totals, passkey, swarms they are in now.

    Shared by the API and the profile page. The passkey is the person's own,
    shown only to them (the response is not cached).
    """
    ctx = context()
    tracked = people.tracker_member(ctx.db, name)
    shown = people.public_person(people.get_person(ctx.db, name), tracked)
    passkey = people.get_passkey(ctx.db, name)
    in_swarms = peersdb.torrents_of_user(ctx.peers_db, tracked["user_id"]) if tracked else []
    return shown | {
        "passkey": passkey,
        # the form the downloaded .torrents carry: libtorrent and qBittorrent refuse the
        # /<passkey>/announce form on a loopback tracker (their SSRF guard)
        "announce_url": f"{announce_base(ctx.settings)}/announce?passkey={passkey}"
        if passkey
        else None,
        "seeding": sorted({s["info_hash"] for s in in_swarms if s["seeding"]}),
        "leeching": sorted({s["info_hash"] for s in in_swarms if not s["seeding"]}),
    }


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "private, no-store"  # the passkey is inside
    return response


@bp.get("/api/profile")
@requires(MEMBER)
def my_profile() -> Response:
    """Your profile: role, uploaded, downloaded, ratio, snatches, passkey, swarms now.
    Who: any person, about themselves."""
    return _private(jsonify(profile_of(current_principal().name)))


@bp.post("/api/profile/passkey")
@requires(MEMBER)
def rotate_passkey() -> Response:
    """Replace your passkey: the tracker refuses the old one within a moment. Who: any
    person, for themselves (their `.torrent`s must be downloaded again)."""
    ctx, name = context(), current_principal().name
    passkey = people.issue_passkey(ctx.db, name, actor=name, now=ctx.clock())
    return _private(jsonify({"passkey": passkey}))


@bp.get("/api/users")
@requires(ADMIN)
def list_users() -> Response:
    """Every person with role, state, right to invite and tracker totals. Who: admins."""
    return jsonify(people.list_people_shown(context().db))


@bp.patch("/api/users/<name>")
@requires(ADMIN)
def change_user(name: str) -> Response:
    """Change a person {role?, can_invite?, disabled?}. Who: admins.

    Disabling ends the person's sessions at once and makes the tracker refuse
    their passkey within a moment; enabling lets both work again. Basic auth
    verified by other app processes follows within `auth.credential_cache_seconds`.
    """
    body = checked_body(CHANGE_BODY)
    doc = change_person_as(current_principal(), name, body)
    return jsonify(people.public_person(doc, people.tracker_member(context().db, name)))


def change_person_as(admin: Principal, name: str, change: dict[str, Any]) -> Doc:
    """Apply an admin's change {role?, can_invite?, disabled?} to a person; return them.

    Shared by PATCH /api/users/<name> and the /admin/people page, so both
    refuse the same things: ForbiddenError when the admin would demote or
    disable themselves, UserNotFoundError, ValidationFailedError (a bad role).
    """
    check_not_demoting_self(admin, name, change)
    ctx, actor = context(), admin.holder
    doc = people.get_person(ctx.db, name)
    if "role" in change or "can_invite" in change:
        doc = people.change_person(
            ctx.db, name, role=change.get("role"), can_invite=change.get("can_invite"),
            actor=actor, now=ctx.clock(),
        )  # fmt: skip
    if change.get("disabled") is True:
        doc = people.disable_person(ctx.db, name, actor=actor, now=ctx.clock())
    elif change.get("disabled") is False and doc["state"] == people.DISABLED:
        doc = people.enable_person(ctx.db, name, actor=actor, now=ctx.clock())
    ctx.auth.forget()  # basic auth cached here; other processes see it within their cache time
    return doc


def check_not_demoting_self(admin: Principal, name: str, change: dict[str, Any]) -> None:
    """Refuse (ForbiddenError) an admin disabling or demoting themselves.

    Some admin must always remain able to undo a change; another admin can.
    """
    if name == admin.name and (change.get("disabled") or change.get("role", ADMIN) != ADMIN):
        raise ForbiddenError("An admin cannot disable or demote themselves; ask another admin.")
