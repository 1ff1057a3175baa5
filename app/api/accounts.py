"""People's accounts: invites and registration, login sessions, password change.

POST/GET /api/invites and DELETE /api/invites/<id>: admins, and members
allowed to invite (their own invites, for members). POST
/api/register: anyone holding an invite's secret (no other credential).
POST /api/session (log in): anyone with a name and password; GET and DELETE
/api/session, POST /api/password: a logged-in user (or basic auth).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.accounts import invites, people, sessions
from app.accounts.auth import (
    ADMIN,
    MEMBER,
    Principal,
    change_password,
    current_principal,
    requires,
    role_of,
    unmatchable_hash,
)
from app.api.web import checked_body, context, object_schema
from app.errors import ForbiddenError, NotFoundError
from app.store.events import Doc

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
@requires(MEMBER)
def create_invite() -> tuple[Response, int]:
    """Create a one-time invite {role?: member|uploader|admin, days?: 7}. Who: admins, and
    members an admin allowed to invite (`can_invite`; they invite members only).

    Answers the invite with its `secret`, shown this once: hand it to the person
    (they register with it at POST /api/register or on the page /register).
    """
    body = checked_body(INVITE_BODY) if _has_body() else {}
    secret, doc = create_invite_as(
        current_principal(), body.get("role", "member"), body.get("days", 7)
    )
    response = jsonify({**invites.public_invite(doc), "secret": secret})
    response.headers["Cache-Control"] = "no-store"  # the secret is shown this once
    return response, 201


def create_invite_as(principal: Principal, role: str, days: float) -> tuple[str, Doc]:
    """Create an invite made by this person; return (secret, projection).

    Shared by POST /api/invites and the profile page: admins invite any role,
    others only if `check_may_invite` lets them.
    """
    ctx = context()
    if principal.role != ADMIN:
        check_may_invite(principal.name, role)
    return invites.create_invite(
        ctx.db, inviter=principal.holder, role=role, days=days, now=ctx.clock()
    )


def check_may_invite(name: str, role: str) -> None:
    """Raise ForbiddenError unless this person (not an admin) may invite someone as `role`."""
    person = people.get_person(context().db, name)
    if not person.get("can_invite"):
        raise ForbiddenError("You may not invite; an admin can allow it.")
    if role != people.MEMBER:
        raise ForbiddenError("Members invite members; ask an admin for another role.")


@bp.get("/api/invites")
@requires(MEMBER)
def list_invites() -> Response:
    """Invites, newest first, with their state (never a secret). Who: admins see every
    invite, other people the ones they made."""
    docs = invites_visible_to(current_principal())
    return jsonify([invites.public_invite(doc) for doc in docs])


def invites_visible_to(principal: Principal) -> list[Doc]:
    """The invites this person may see, newest first: every one for admins, else their own."""
    docs = invites.list_invites(context().db)
    if principal.role != ADMIN:
        docs = [doc for doc in docs if doc.get("inviter") == principal.name]
    return docs


@bp.delete("/api/invites/<invite_id>")
@requires(MEMBER)
def revoke_invite(invite_id: str) -> Response:
    """Revoke an open invite (a used one stays used). Who: admins, and its inviter."""
    doc = revoke_invite_as(current_principal(), invite_id)
    return jsonify(invites.public_invite(doc))


def revoke_invite_as(principal: Principal, invite_id: str) -> Doc:
    """Revoke an invite on this person's behalf; NotFoundError unless it is theirs (or an admin's).

    Shared by DELETE /api/invites/<id> and the profile and admin pages.
    """
    ctx = context()
    if principal.role != ADMIN:
        invite = ctx.db.get_or_none(invites.invite_doc_id(invite_id))
        if not invite or invite.get("inviter") != principal.name:
            raise NotFoundError(f"No invite {invite_id!r} of yours.")
    return invites.revoke_invite(ctx.db, invite_id, actor=principal.holder, now=ctx.clock())


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
    secret, session = open_session(body["name"], body["password"])
    doc = context().db.get(f"user:{session.user}")
    response = jsonify({"name": session.user, "role": role_of(doc), "csrf_token": session.csrf})
    set_session_cookie(response, secret)
    return response


def open_session(name: str, password: str) -> tuple[str, sessions.Session]:
    """Check a login of this request's client; return (the cookie's secret, the session).

    Shared by the API and the login page. Raises InvalidCredentialsError or
    TooManyAttemptsError.
    """
    ctx = context()
    return sessions.login(
        ctx.db,
        name,
        password,
        address=request.remote_addr or "unknown",
        limiter=ctx.login_limiter,
        hours=ctx.settings.auth.session_hours,
        now=ctx.clock(),
        unmatchable_hash=unmatchable_hash(),
    )


def set_session_cookie(response: Response, secret: str) -> None:
    """The session cookie: HttpOnly, SameSite=Lax, Secure when this request came over HTTPS."""
    response.set_cookie(
        sessions.SESSION_COOKIE,
        secret,
        max_age=int(context().settings.auth.session_hours * 3600),
        httponly=True,
        secure=request.is_secure,
        samesite="Lax",
    )


def end_session(response: Response) -> None:
    """Forget this request's login session, in the store and in the browser."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    if cookie:
        sessions.logout(context().db, cookie)
    response.delete_cookie(sessions.SESSION_COOKIE, httponly=True, samesite="Lax")


@bp.get("/api/session")
@requires(MEMBER)
def who_am_i() -> Response:
    """The caller: {name, role, csrf_token (with a login session)}. Who: any user."""
    principal = current_principal()
    doc = context().db.get(f"user:{principal.name}")
    return jsonify(
        {"name": principal.name, "role": role_of(doc), "csrf_token": principal.csrf or None}
    )


@bp.delete("/api/session")
@requires(MEMBER)
def log_out() -> Response:
    """End this login session (with its CSRF token). Who: a logged-in user."""
    response = jsonify({"logged_out": True})
    end_session(response)
    return response


@bp.post("/api/password")
@requires(MEMBER)
def new_password() -> Response:
    """Change your own password {current, new}. Who: the user (session or basic auth)."""
    body = checked_body(PASSWORD_BODY)
    change_own_password(current_principal().name, body["current"], body["new"])
    return jsonify({"changed": True})


def change_own_password(name: str, current: str, new: str) -> None:
    """Replace this person's password after checking the current one as a login would.

    Shared by POST /api/password and the profile page. Every older session
    ends at its next request (it was opened with the old password). Raises
    InvalidCredentialsError, TooManyAttemptsError, ValidationFailedError.
    """
    ctx = context()
    sessions.verify_password(  # the current password, checked (and limited) as at a login
        ctx.db,
        name,
        current,
        address=request.remote_addr or "unknown",
        limiter=ctx.login_limiter,
        unmatchable=unmatchable_hash(),
    )
    change_password(ctx.db, name, new, actor=name, now=ctx.clock())
    ctx.auth.forget()
