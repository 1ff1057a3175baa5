"""Invites and registration: how a person gets an account (Fairywren's invites).

POST/GET /api/invites and DELETE /api/invites/<id>: admins. POST
/api/register: anyone holding an invite's secret (no other credential).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.accounts import invites
from app.accounts.auth import ADMIN, current_principal, requires
from app.api.web import checked_body, context, object_schema

bp = Blueprint("accounts", __name__)

INVITE_BODY = object_schema(
    {"role": {"type": "string"}, "days": {"type": "number"}}, [], may_be_empty=True
)
REGISTER_BODY = object_schema(
    {
        "invite": {"type": "string", "maxLength": 200},
        "name": {"type": "string", "maxLength": 64},
        "password": {"type": "string", "maxLength": 1024},
    },
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
    return jsonify({"name": doc["name"], "role": doc["role"]}), 201


def _has_body() -> bool:
    return bool(request.content_length)
