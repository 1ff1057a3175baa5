"""GET /api/sites: how replication with every other site is doing (admins only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.accounts.auth import ADMIN, requires
from app.api.web import context
from app.sites.status import site_statuses
from app.store.events import site_of

bp = Blueprint("sites", __name__)


@bp.get("/api/sites")
@requires(ADMIN)
def list_sites() -> Response:
    """This site's name and, per configured site: URL (never with credentials),
    direction, state (running, retrying, failing, stopped) and per flow (push,
    pull) the events pending, last success, last error with its reason."""
    ctx = context()
    now = ctx.clock()
    return jsonify({"site": site_of(ctx.db), "sites": site_statuses(ctx.db, ctx.settings, now)})
