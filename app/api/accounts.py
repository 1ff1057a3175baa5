"""People's accounts: invites and registration, login sessions, password change.

POST/GET /api/invites and DELETE /api/invites/<id>: admins. POST
/api/register: anyone holding an invite's secret (no other credential).
POST /api/session (log in): anyone with a name and password; GET and DELETE
/api/session, POST /api/password: a logged-in user (or basic auth).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.accounts import invites, sessions
from app.accounts.auth import (
    ADMIN,
    USER,
    change_password,
    current_principal,
    requires,
    role_of,
    unmatchable_hash,
)
from app.api.web import checked_body, context, object_schema

bp = Blueprint("accounts", __name__)

INVITE_BODY = object_schema(
    {"role": {"type": "string"}, "days": {"type": "number"}}, [], may_be_empty=True
)
_NAME = {"type": "string", "maxLength": 64}
_PASSWORD = {"type": "string", "maxLength": 1024}
LOGIN_BODY = object_schema({"name": _NAME, "password": _PASSWORD}, ["name", "password"])
PASSWORD_BODY = object_schema({"current": _PASSWORD, "new": _PASSWORD}, ["current", "new"])
REGISTER_BODY = object_schema(
    {"invite": {"type": "string", "maxLength": 200}, "name": _NAME, "password": _PASSWORD},
    ["invite", "name", "password"],
)


@bp.post("/api/invites")
@requires(ADMIN)
def create_invite() -> tuple[Response, int]:
    """Create a one-time invite {role?: member|uploader|admin, days?: 7}. Who: admins.

    Answers the invite with its `secret`, shown this once: hand it to the person
    (they register with it at POST /api/register).
    """
    body = checked_body(INVITE_BODY) if _has_body() else {}
    ctx = context()
    secret, doc = invites.create_invite(
        ctx.db,
        inviter=current_principal().holder,
        role=body.get("role", "member"),
        days=body.get("days", 7),
        now=ctx.clock(),
    )
    return jsonify({**invites.public_invite(doc), "secret": secret}), 201


@bp.get("/api/invites")
@requires(ADMIN)
def list_invites() -> Response:
    """Every invite, newest first, with its state (never a secret). Who: admins."""
    return jsonify([invites.public_invite(doc) for doc in invites.list_invites(context().db)])


@bp.delete("/api/invites/<invite_id>")
@requires(ADMIN)
def revoke_invite(invite_id: str) -> Response:
    """Revoke an open invite (a used one stays used). Who: admins."""
    ctx = context()
    doc = invites.revoke_invite(
        ctx.db, invite_id, actor=current_principal().holder, now=ctx.clock()
    )
    return jsonify(invites.public_invite(doc))


@bp.post("/api/register")
def register() -> tuple[Response, int]:
    """Register with an invite: {invite, name, password}. Who: anyone holding an
    invite's secret; no other credential is asked for."""
    body = checked_body(REGISTER_BODY)
    ctx = context()
    doc = invites.register(ctx.db, body["invite"], body["name"], body["password"], now=ctx.clock())
    return jsonify({"name": doc["name"], "role": role_of(doc)}), 201


def _has_body() -> bool:
    return bool(request.get_data(cache=True))


@bp.post("/api/session")
def log_in() -> Response:
    """Log in {name, password}: sets the session cookie; answers {name, role, csrf_token}.
    Who: anyone (failed attempts are limited per account and per address)."""
    body = checked_body(LOGIN_BODY)
    ctx = context()
    auth = ctx.settings.auth
    secret, session = sessions.login(
        ctx.db,
        body["name"],
        body["password"],
        address=request.remote_addr or "unknown",
        limiter=ctx.login_limiter,
        hours=auth.session_hours,
        now=ctx.clock(),
        unmatchable_hash=unmatchable_hash(),
    )
    doc = ctx.db.get(f"user:{session.user}")
    response = jsonify({"name": session.user, "role": role_of(doc), "csrf_token": session.csrf})
    response.set_cookie(
        sessions.SESSION_COOKIE,
        secret,
        max_age=int(auth.session_hours * 3600),
        httponly=True,
        secure=request.is_secure,
        samesite="Lax",
    )
    return response


@bp.get("/api/session")
@requires(USER)
def who_am_i() -> Response:
    """The caller: {name, role, csrf_token (with a login session)}. Who: any user."""
    principal = current_principal()
    doc = context().db.get(f"user:{principal.name}")
    return jsonify(
        {"name": principal.name, "role": role_of(doc), "csrf_token": principal.csrf or None}
    )


@bp.delete("/api/session")
@requires(USER)
def log_out() -> Response:
    """End this login session (with its CSRF token). Who: a logged-in user."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    if cookie:
        sessions.logout(context().db, cookie)
    response = jsonify({"logged_out": True})
    response.delete_cookie(sessions.SESSION_COOKIE, httponly=True, samesite="Lax")
    return response


@bp.post("/api/password")
@requires(USER)
def new_password() -> Response:
    """Change your own password {current, new}. Who: the user (session or basic auth)."""
    body = checked_body(PASSWORD_BODY)
    ctx = context()
    name = current_principal().name
    sessions.verify_password(  # the current password, checked (and limited) as at a login
        ctx.db,
        name,
        body["current"],
        address=request.remote_addr or "unknown",
        limiter=ctx.login_limiter,
        unmatchable=unmatchable_hash(),
    )
    change_password(ctx.db, name, body["new"], actor=name, now=ctx.clock())
    ctx.auth.forget()
    return jsonify({"changed": True})
