"""Admin endpoints: inventory upload."""

from __future__ import annotations

import io
from typing import IO, Any, cast

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import ADMIN, current_principal, requires
from app.api.web import context
from app.errors import InvalidCsvError
from app.queues.albums import ImportSummary, import_albums, open_csv_text, read_inventory_csv

bp = Blueprint("admin", __name__)


@bp.post("/api/admin/import-csv")
@requires(ADMIN)
def import_csv() -> tuple[Response, int]:
    """Import an inventory CSV (admins only): multipart field `file`, or the raw body.

    Streams the upload row by row, so memory stays flat for large files.
    Answers the import summary; a file without the required columns is refused
    with invalid_csv before anything is written.
    """
    ctx = context()
    request.max_content_length = ctx.settings.server.max_upload_bytes
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
