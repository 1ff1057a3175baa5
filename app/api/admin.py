"""Admin endpoints: inventory upload, the leases of every queue and releasing one by hand."""

from __future__ import annotations

import io
from typing import IO, Any, cast

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import ADMIN, current_principal, requires
from app.api.web import checked_body, context, object_schema
from app.errors import InvalidCsvError, NotFoundError
from app.queues import imports, leases
from app.queues.albums import ImportSummary, import_albums, open_csv_text, read_inventory_csv

bp = Blueprint("admin", __name__)

RELEASE_BODY = object_schema(
    {
        "id": {"type": "string", "minLength": 1, "maxLength": leases.MAX_ID_CHARS},
        "reason": {"type": "string", "maxLength": leases.MAX_REASON_CHARS},
    },
    ["id"],
)


@bp.post("/api/admin/import-csv")
@requires(ADMIN)
def import_csv() -> tuple[Response, int]:
    """Import an inventory CSV (admins only): multipart field `file`, or the raw body.

    Streams the upload row by row, so memory stays flat for large files.
    Answers the import summary; a file without the required columns is refused
    with invalid_csv before anything is written.
    """
    ctx = context()  # the body may reach server.max_upload_bytes: app/api allow_large_uploads
    upload = request.files.get("file")
    binary = upload.stream if upload is not None else request.stream
    if upload is None and not request.content_length:
        raise InvalidCsvError("Send the CSV as multipart field 'file' or as the request body.")
    summary = ImportSummary()
    text = open_csv_text(_readable(binary))
    try:
        rows = read_inventory_csv(text, summary)
        import_albums(
            ctx.db, rows, actor=current_principal().holder, now=ctx.clock(), summary=summary
        )
    except UnicodeDecodeError as exc:
        summary.reject(0, f"the file is not UTF-8 ({exc.reason}); rows before it were imported")
    finally:
        text.detach()  # the request owns its stream
    return jsonify(summary.as_dict()), 200


def _readable(stream: Any) -> IO[bytes]:
    """TextIOWrapper needs a buffered reader; werkzeug's streams are not all of that kind."""
    if isinstance(stream, io.BufferedIOBase | io.BytesIO):
        return cast(IO[bytes], stream)
    return cast(IO[bytes], io.BufferedReader(stream))


@bp.get("/api/admin/imports/<import_id>")
@requires(ADMIN)
def import_progress(import_id: str) -> Response:
    """The progress of an import started on the /admin/import page (admins only).

    {"id", "file", "state": running|finished|failed|stopped, "rows_read",
    "bytes_read", "total_bytes", "percent", "summary": <the import summary>, …};
    404 not_found for an unknown id.
    """
    ctx = context()
    progress = imports.get_import(ctx.db, import_id, ctx.clock())
    if progress is None:
        raise NotFoundError(f"No import has id {import_id!r}.", id=import_id)
    return jsonify(progress)


@bp.get("/api/admin/leases")
@requires(ADMIN)
def list_leases() -> Response:
    """What is leased now, per queue, soonest to expire first (admins only)."""
    ctx = context()
    groups = leases.list_leases(ctx.db, ctx.clock())
    return jsonify({g.name: {"total": g.total, "items": g.items} for g in groups})


@bp.post("/api/admin/release")
@requires(ADMIN)
def release_lease() -> Response:
    """Release a leased item by hand (admins only): it is ready in its queue at once.

    JSON {"id": "<aggregate id, e.g. album:123>", "reason": optional}; 404
    not_found when no queued item has that id or it is not leased.
    """
    body = checked_body(RELEASE_BODY)
    item_id = leases.check_item_id(body["id"])
    reason = leases.check_release_reason(body.get("reason"))
    ctx = context()
    report = leases.release_lease(
        ctx.db, item_id, actor=current_principal().holder, now=ctx.clock(), reason=reason
    )
    return jsonify(report)
