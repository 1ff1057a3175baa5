"""Storage status over HTTP: per root, and Patchwork's totals.

- `GET /api/storage`: every content root and ingest volume with the files
  and bytes recorded there, free space and the last check. Who: workers and
  admins (a worker token, an admin's password or session): it names local
  paths and missing files' names, so `auth.anonymous_workers` (which lets
  anyone lease work) does not let anyone in here.
- `GET /api/storage/status`: Patchwork's storage statistics, `{"storage_used":
  bytes, "number_of_files": n}` over every root. Who: anyone, no credential,
  as /api/status (totals reveal nothing else).

Both read the stored snapshot (app/storage/status.py), no reduce per request;
the per-root answer adds one check document and statvfs per root, the totals
are the snapshot's sum alone (anyone may ask them, as often as they like).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.accounts.auth import ANONYMOUS, WORKER, current_principal, requires
from app.api.web import context
from app.errors import AuthenticationRequiredError
from app.storage.status import get_storage, storage_totals_now
from app.store.designdocs import get_warming_state, is_warming
from app.store.events import Doc

bp = Blueprint("storage", __name__)


def _warming() -> bool:
    """Whether indexes are still warming: then the snapshot is read as stored, never counted."""
    return is_warming(get_warming_state(context().db))


def current_storage() -> Doc:
    """The storage status now; while indexes warm, as stored (never waiting for a build)."""
    ctx = context()
    return get_storage(ctx.db, ctx.settings, ctx.clock(), stale=_warming())


def check_not_anonymous() -> None:
    """Refuse the anonymous worker `requires(WORKER)` lets in under auth.anonymous_workers."""
    if current_principal().role == ANONYMOUS:
        raise AuthenticationRequiredError("This endpoint needs credentials: worker or admin.")


@bp.get("/api/storage")
@requires(WORKER)
def storage_status() -> Response:
    """Roots: {name, kind, path, files, bytes, free_bytes, total_bytes, last_check}; as_of."""
    check_not_anonymous()
    return jsonify(current_storage())


@bp.get("/api/storage/status")
def storage_statistics() -> Response:
    """Patchwork's storage statistics: bytes used and number of files, over every root."""
    ctx = context()
    return jsonify(storage_totals_now(ctx.db, ctx.clock(), stale=_warming()))
