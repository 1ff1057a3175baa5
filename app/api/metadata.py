"""The original distleech_server API: metadata and torrent download queues.

Every endpoint here is for workers (worker token, or an admin; anonymous
callers too when `auth.anonymous_workers` is on).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import WORKER, current_principal, requires
from app.api.web import context, json_body, parse_rows, whole_number
from app.errors import MethodNotAllowedError, ValidationFailedError
from app.ids import MAX_SAFE_INT
from app.queues import albums, downloads
from app.queues.downloads import TorrentRef

bp = Blueprint("metadata", __name__)


@bp.get("/metadata/<rows>")
@requires(WORKER)
def lease_metadata(rows: str) -> Response:
    """Lease albums that need metadata: {"albums": [{"album", "id", "sortArtist"}]}."""
    ctx = context()
    count = parse_rows(rows, ctx.settings.leases.max_rows)
    leased = albums.lease_albums(
        ctx.leaser,
        current_principal().holder,
        count,
        ctx.clock(),
        ctx.settings.leases.metadata_minutes,
    )
    return jsonify({"albums": leased})


def _entry_error(code: str, reason: str) -> dict[str, str]:
    return {"error": code, "reason": reason}


def _parse_torrent_ref(item: Any) -> TorrentRef | str:
    """One {"site", "torrentId"} entry, or the reason it cannot be used."""
    if not isinstance(item, dict):
        return "each torrent must be an object with site and torrentId"
    site, torrent_id = item.get("site"), item.get("torrentId")
    host = downloads.site_host(site) if isinstance(site, str) else None
    if host is None:
        return "site must be the site's URL or hostname"
    if isinstance(torrent_id, str):
        torrent_id = whole_number(torrent_id.strip())
    if isinstance(torrent_id, bool) or not isinstance(torrent_id, int):
        return "torrentId must be a positive whole number"
    if not 1 <= torrent_id <= MAX_SAFE_INT:  # ids must survive JavaScript (views, clients)
        return "torrentId must be a positive whole number"
    return TorrentRef(host, torrent_id)


def _parse_ref_list(value: Any) -> list[TorrentRef] | str:
    if not isinstance(value, list):
        return "the value must be a list of torrents ([] for not found)"
    refs = []
    for item in value:
        parsed = _parse_torrent_ref(item)
        if isinstance(parsed, str):
            return parsed
        refs.append(parsed)
    return refs


def _body_object() -> dict[str, Any]:
    body = json_body(request)
    if not isinstance(body, dict) or not body:
        raise ValidationFailedError("The body must be a non-empty JSON object.")
    return body


@bp.get("/metadata/submit")
def submit_metadata_get() -> Response:
    # Without this, GET falls through to /metadata/<rows> and answers invalid_rows.
    raise MethodNotAllowedError("Use POST or PUT /metadata/submit with a JSON body.")


@bp.route("/metadata/submit", methods=["POST", "PUT"])
@requires(WORKER)
def submit_metadata() -> tuple[Response, int]:
    """Record found torrents ([] = not found) per album id; report per album."""
    ctx = context()
    report: dict[str, Any] = {}
    found: dict[int, list[TorrentRef]] = {}
    key_of: dict[int, str] = {}  # results are reported under the key the client sent
    for key, value in _body_object().items():
        album_id = whole_number(key.strip())
        refs = _parse_ref_list(value)
        if album_id is None:
            report[key] = _entry_error("invalid_album_id", "Album ids are whole numbers.")
        elif album_id in found:  # "111" and "0111" name one album
            report[key] = _entry_error("invalid_entry", f"Album {album_id} is listed twice.")
        elif isinstance(refs, str):
            report[key] = _entry_error("invalid_entry", refs)
        else:
            found[album_id], key_of[album_id] = refs, key
    if found:
        results = albums.submit_metadata(
            ctx.db,
            found,
            holder=current_principal().holder,
            now=ctx.clock(),
            retry_minutes=ctx.settings.leases.retry_minutes,
        )
        report.update({key_of[album_id]: v for album_id, v in results.items()})
    return _report_response(report, "albums")


def _report_response(report: dict[str, Any], noun: str) -> tuple[Response, int]:
    """200 when anything was applied; 400 (nothing changed) when every entry was refused."""
    applied = sum(1 for v in report.values() if _is_applied(v))
    body = {"accepted": applied, "rejected": len(report) - applied, noun: report}
    if applied == 0:
        body = {
            "error": "no_valid_entries",
            "reason": "No entry could be applied.",
            "details": body,
        }
        return jsonify(body), 400
    return jsonify(body), 200


def _is_applied(value: Any) -> bool:
    if isinstance(value, list):
        return any("error" not in entry for entry in value)
    return isinstance(value, dict) and "error" not in value


@bp.get("/torrents")
def torrents_get() -> Response:
    """Anyone: always 405, with a hint (the original answered GET with an HTML error)."""
    raise MethodNotAllowedError(
        "Use POST /torrents with form fields site and rows to lease download tasks.",
        allowed=("POST",),
    )


@bp.post("/torrents")
@requires(WORKER)
def lease_torrents() -> Response:
    """Lease download tasks of one site: {"site": host, "torrents": [{"id", "siteTorrentId"}]}."""
    ctx = context()
    site = request.form.get("site", "")
    host = downloads.site_host(site)
    if host is None:
        raise ValidationFailedError(
            "Form field site must be the site's URL or hostname.", field="site"
        )
    count = parse_rows(request.form.get("rows"), ctx.settings.leases.max_rows)
    leased = downloads.lease_downloads(
        ctx.leaser,
        host,
        current_principal().holder,
        count,
        ctx.clock(),
        ctx.settings.leases.download_days,
    )
    return jsonify({"site": host, "torrents": leased})


@bp.route("/torrents/submit", methods=["POST", "PUT"])
@requires(WORKER)
def submit_torrents() -> tuple[Response, int]:
    """Mark downloads filled: {"/local/path": [{"site", "torrentId"}]}; report per path."""
    ctx = context()
    report: dict[str, Any] = {}
    filled: dict[str, list[TorrentRef]] = {}
    for path, value in _body_object().items():
        refs = _parse_ref_list(value)
        if not path.strip():
            report[path] = [_entry_error("invalid_path", "The local path must not be empty.")]
        elif isinstance(refs, str) or not refs:
            reason = refs if isinstance(refs, str) else "list at least one torrent"
            report[path] = [_entry_error("invalid_entry", reason)]
        else:
            filled[path] = refs
    if filled:
        report.update(
            downloads.submit_downloads(
                ctx.db, filled, holder=current_principal().holder, now=ctx.clock()
            )
        )
    return _report_response(report, "paths")
