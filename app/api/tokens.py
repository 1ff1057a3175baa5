"""Worker and queuer tokens over HTTP: what `distleech token add|list|revoke` does. Who: admins.

GET /api/tokens lists them (never a token), POST /api/tokens {name, role}
issues one and answers it this once, DELETE /api/tokens/<name> revokes every
active token with that name. The /admin/tokens page calls the same functions.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.accounts.auth import (
    ADMIN,
    TOKEN_ROLES,
    Principal,
    current_principal,
    issue_token,
    list_tokens,
    requires,
    revoke_token,
)
from app.api.web import checked_body, context, object_schema

bp = Blueprint("tokens", __name__)

TOKEN_BODY = object_schema(
    {"name": {"type": "string", "maxLength": 64}, "role": {"enum": list(TOKEN_ROLES)}},
    ["name", "role"],
)


@bp.get("/api/tokens")
@requires(ADMIN)
def tokens() -> Response:
    """Every token: [{name, id, role, revoked}] by name (never the token). Who: admins."""
    return jsonify(list_tokens(context().db))


@bp.post("/api/tokens")
@requires(ADMIN)
def add_token() -> tuple[Response, int]:
    """Issue a token {name, role: worker|queuer}; 201 with the token, shown this once.

    Who: admins. 409 already_exists while an active token has the name.
    """
    body = checked_body(TOKEN_BODY)
    issued = issue_token_as(current_principal(), body["name"], body["role"])
    response = jsonify(issued)
    response.headers["Cache-Control"] = "no-store"  # the token is inside
    return response, 201


@bp.delete("/api/tokens/<name>")
@requires(ADMIN)
def remove_token(name: str) -> Response:
    """Revoke every active token with this name: {name, revoked: how many}. Who: admins.

    404 not_found when none is active. This process refuses them at once, other
    app processes within `auth.credential_cache_seconds`.
    """
    return jsonify({"name": name, "revoked": revoke_token_as(current_principal(), name)})


def issue_token_as(admin: Principal, name: str, role: str) -> dict[str, Any]:
    """Issue a token on an admin's behalf: {name, id, role, token}; shared with /admin/tokens."""
    ctx = context()
    token = issue_token(ctx.db, name, role, actor=admin.holder, now=ctx.clock())
    active = [t for t in list_tokens(ctx.db) if t["name"] == name and not t["revoked"]]
    token_id = active[0]["id"] if len(active) == 1 else None  # None: a racing issue won too
    return {"name": name, "id": token_id, "role": role, "token": token}


def revoke_token_as(admin: Principal, name: str) -> int:
    """Revoke a name's active tokens on an admin's behalf; return how many (shared with the page).

    The cache of verified credentials is dropped, so this process stops
    accepting them with this request, not after the cache time.
    """
    ctx = context()
    count = revoke_token(ctx.db, name, actor=admin.holder, now=ctx.clock())
    ctx.auth.forget()
    return count
