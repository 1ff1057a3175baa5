"""Ingest over HTTP: the scanner's listings of what landed on an ingest volume.

For workers (a worker token, or an admin; anonymous callers too when
`auth.anonymous_workers` is on).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import WORKER, current_principal, requires
from app.api.web import context, json_body
from app.ingest import parse, record

bp = Blueprint("ingest", __name__)


@bp.post("/api/ingest")
@requires(WORKER)
def ingest_listings() -> Response:
    """Match listings of directories (or loose files); record matches. Who: worker/admin.

    One listing: JSON {"path", "kind": "directory"|"file", "files": [{"path",
    "size"}], "verified": {<info hash>: {"status", "piece"?, …}}, "dry_run":
    false}, answered with its report. A batch: {"listings": [<listing>, …]}
    (at most MAX_BATCH_LISTINGS listings and MAX_BATCH_FILES files in all),
    answered with {"reports": [<report>, …]} in the same order; one bad
    listing refuses the whole batch and nothing changes.
    """
    body = json_body(request)
    batch = parse.is_batch(body)
    listings = parse.parse_batch(body) if batch else [parse.parse_listing(body)]
    ctx = context()
    actor = current_principal().holder
    reports = record.ingest_listings(ctx.db, listings, actor=actor, now=ctx.clock())
    return jsonify({"reports": reports} if batch else reports[0])
