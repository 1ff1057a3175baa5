"""The torrent registry over HTTP.

Every endpoint here is for workers (a worker token, or an admin; anonymous
callers too when `auth.anonymous_workers` is on): the metadata and download
workers upload what they learn, and a reseeding worker asks where a
torrent's files live. People may search and read torrents too, and
uploaders may upload them. The ingest scanner's listings go to app/api/ingest.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Request, Response, jsonify, request
from werkzeug.datastructures import FileStorage

from app.accounts.auth import MEMBER, UPLOADER, WORKER, current_principal, requires
from app.api.web import context, form_or_json_fields, json_body, parse_json_text, whole_number
from app.errors import (
    InvalidGazelleError,
    InvalidJsonError,
    InvalidQueryError,
    InvalidReasonError,
    MissingFieldError,
    TorrentNotFoundError,
    ValidationFailedError,
)
from app.queues.downloads import TorrentRef
from app.registry import aggregate, keys, parse, queries, register
from metainfo import torrent as metainfo_torrent

bp = Blueprint("torrents", __name__)

MAX_REASON_CHARS = 1000
DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT = 50, 100


def _actor() -> str:
    return current_principal().holder


def _is_multipart(req: Request) -> bool:
    return req.mimetype == "multipart/form-data"


def _json_object() -> dict[str, Any]:
    body = json_body(request)
    if not isinstance(body, dict):
        raise ValidationFailedError("The JSON body must be an object.")
    return body


def _form_gazelle(raw: str | None) -> Any:
    """The optional `gazelle` form field: JSON text of the response object."""
    if raw is None or not raw.strip():
        return None
    try:
        return parse_json_text(raw, "The gazelle field")
    except InvalidJsonError as exc:
        raise InvalidGazelleError(exc.reason) from None


def upload_from_form(fields: Mapping[str, str], file: FileStorage | None) -> aggregate.Upload:
    """Parse a form upload: the .torrent `file` and/or Gazelle JSON text, `site`, `torrentId`.

    Shared by POST /api/torrents (multipart) and the upload page
    (app/web/library.py), so both refuse the same input with the same codes.
    """
    gazelle_raw = _form_gazelle(fields.get("gazelle"))
    if file is None and gazelle_raw is None:
        raise MissingFieldError("Send the .torrent as the file field 'torrent'.", field="torrent")
    data = file.read(metainfo_torrent.MAX_TORRENT_FILE_BYTES + 1) if file is not None else None
    parsed = parse.parse_torrent_file(data) if data is not None else None
    gazelle = parse.parse_gazelle(gazelle_raw) if gazelle_raw is not None else None
    return aggregate.make_upload(fields.get("site"), fields.get("torrentId"), parsed, gazelle)


def _upload_from_request() -> aggregate.Upload:
    """Parse either form of upload: multipart (.torrent file) or JSON (Gazelle data)."""
    if _is_multipart(request):
        return upload_from_form(request.form, request.files.get("torrent"))
    body = _json_object()
    gazelle_raw = body.get("gazelle")
    if gazelle_raw is None:
        raise MissingFieldError("The JSON body needs 'gazelle' (and 'site').", field="gazelle")
    site = body.get("site")
    if site is None:
        raise MissingFieldError("The JSON body needs 'site'.", field="site")
    gazelle = parse.parse_gazelle(gazelle_raw)
    return aggregate.make_upload(site, body.get("torrentId"), None, gazelle)


@bp.post("/api/torrents")
@requires(WORKER, UPLOADER)
def upload_torrent() -> tuple[Response, int]:
    """Register what a worker learned about a torrent. Who: a worker token, an uploader
    or an admin.

    JSON {"site", "gazelle": <action=torrent response>} or multipart with the
    file field `torrent`, `site`, `torrentId` (optional `gazelle` JSON text).
    201 when the torrent is new, else 200 ("updated" or "unchanged").
    """
    upload = _upload_from_request()
    ctx = context()
    report = register.register_upload(ctx.db, upload, actor=_actor(), now=ctx.clock())
    return jsonify(report), 201 if report["status"] == "registered" else 200


def _search_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_SEARCH_LIMIT
    value = whole_number(raw.strip())
    if value is None or not 1 <= value <= MAX_SEARCH_LIMIT:
        raise InvalidQueryError(
            f"limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}.", field="limit"
        )
    return value


@bp.get("/api/torrents")
@requires(WORKER, MEMBER)
def search_torrents() -> Response:
    """Search titles: every word of `q` (group, artists, year, directory). Who: workers and
    people (members, uploaders, admins)."""
    query = request.args.get("q", "")
    if not query.strip():
        raise InvalidQueryError("Give the words to search for as q.", field="q")
    limit = _search_limit(request.args.get("limit"))
    found = queries.search_torrents(context().db, query, limit=limit)
    return jsonify(
        {
            "query": query,
            "count": len(found),
            "torrents": [queries.public_torrent(d) for d in found],
        }
    )


@bp.get("/api/torrents/<info_hash>")
@requires(WORKER, MEMBER)
def reseed_lookup(info_hash: str) -> Response:
    """Where a torrent's files live and whether they were verified. Who: workers, people."""
    doc = queries.get_torrent(context().db, keys.check_info_hash(info_hash))
    return jsonify(queries.reseed_view(doc))


def _site_ref(site: str, torrent_id: str) -> TorrentRef:
    return TorrentRef(keys.parse_site(site), keys.parse_torrent_id(torrent_id))


@bp.get("/api/torrents/by-site/<site>/<torrent_id>")
@requires(WORKER)
def reseed_lookup_by_site(site: str, torrent_id: str) -> Response:
    """The reseed lookup by a site's host and torrent id. Who: worker/admin."""
    ref = _site_ref(site, torrent_id)
    doc = queries.find_by_site(context().db, ref)
    if doc is None:
        raise TorrentNotFoundError(
            f"No torrent is registered for {ref.host} torrent {ref.torrent_id}.",
            site=ref.host,
            torrentId=ref.torrent_id,
        )
    return jsonify(queries.reseed_view(doc))


@bp.get("/api/torrents/<info_hash>/file")
@requires(WORKER)
def torrent_file(info_hash: str) -> Response:
    """The stored .torrent (its info dictionary only; no announce URLs). Who: worker/admin."""
    checked = keys.check_info_hash(info_hash)
    data = queries.read_torrent_file(context().db, checked)
    response = Response(data, mimetype="application/x-bittorrent")
    response.headers["Content-Disposition"] = f'attachment; filename="{checked}.torrent"'
    return response


def _reason() -> str | None:
    """The optional reason ("trumped", "deleted", …) from a JSON body or a form field."""
    raw = form_or_json_fields(request).get("reason")
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_REASON_CHARS:
        raise InvalidReasonError(f"reason must be text of at most {MAX_REASON_CHARS} characters.")
    return raw.strip() or None


@bp.post("/api/torrents/<info_hash>/unavailable")
@requires(WORKER)
def mark_unavailable(info_hash: str) -> Response:
    """Mark a torrent trumped or deleted; its download tasks are cancelled. Who: worker/admin."""
    checked = keys.check_info_hash(info_hash)
    reason = _reason()
    ctx = context()
    report = register.mark_unavailable(ctx.db, checked, reason, actor=_actor(), now=ctx.clock())
    return jsonify(report)


@bp.post("/api/torrents/by-site/<site>/<torrent_id>/unavailable")
@requires(WORKER)
def mark_unavailable_by_site(site: str, torrent_id: str) -> Response:
    """As above, by site and torrent id (a task without a registered torrent too)."""
    ref = _site_ref(site, torrent_id)
    reason = _reason()
    ctx = context()
    report = register.mark_site_torrent_unavailable(
        ctx.db, ref, reason, actor=_actor(), now=ctx.clock()
    )
    return jsonify(report)
