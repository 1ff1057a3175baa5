"""Torrents at `/library`: browse and search, a torrent's page, upload.

GET /torrents belongs to the original clients' API, so the pages live here.
They read what the API reads (app.registry.queries, the tracker's directory
and swarms) and upload through the API's own parser
(app.api.torrents.upload_from_form), so a page never says something a script
would be told differently. The seeders/leechers/snatches cells refresh every
10 s through /library/counts (htmx out-of-band swaps); without JavaScript
the numbers are those of when the page was loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, request, url_for
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from app.accounts import people
from app.accounts.auth import UPLOADER
from app.api.torrents import upload_from_form
from app.api.tracker import announce_base
from app.api.web import context
from app.errors import ApiError, InvalidQueryError, MissingFieldError
from app.registry import keys, queries, register
from app.store.events import Doc
from app.tracker import peersdb
from app.tracker.accounts import tracked_doc_id
from app.web.pages import (
    check_form_csrf,
    has_role,
    login_required,
    page_blueprint,
    page_reason,
    render_page,
    role_required,
    see_other,
    viewer,
)
from metainfo.names import whole_number

bp = page_blueprint("library", __name__)

PAGE_SIZE = 50
MAX_COUNTS = 100  # info hashes one /library/counts request may ask about
SORTS = {"newest": "Newest first", "name": "By name"}
# What the torrent page says after an upload (register_upload's status).
UPLOADED = {
    "registered": "Uploaded: the torrent is registered.",
    "updated": "Uploaded: what you sent was added to a torrent the registry knew.",
    "unchanged": "Uploaded: the registry knew all of this already, so nothing changed.",
}
FORM_FIELDS = ("site", "torrentId", "gazelle")


@dataclasses.dataclass(frozen=True)
class Counts:
    """A torrent's tracker numbers: live swarm counts and recorded snatches."""

    seeders: int = 0
    leechers: int = 0
    snatches: int = 0


@dataclasses.dataclass(frozen=True)
class Row:
    """One torrent in a list: what a person reads to choose it."""

    info_hash: str
    title: str
    size: int
    file_count: int
    verified: str
    counts: Counts


# ---------------------------------------------------------------- reading


def tracker_counts(info_hashes: list[str]) -> dict[str, Counts]:
    """Seeders/leechers (the peers database) and snatches (`tracked:` projections) by hash."""
    ctx = context()
    live = peersdb.swarm_counts(ctx.peers_db, info_hashes)
    tracked = ctx.db.get_many(tracked_doc_id(h) for h in info_hashes)
    counts = {}
    for info_hash in info_hashes:
        seeders, leechers = live.get(info_hash, (0, 0))
        snatches = int((tracked.get(tracked_doc_id(info_hash)) or {}).get("snatches") or 0)
        counts[info_hash] = Counts(seeders, leechers, snatches)
    return counts


def verified_words(doc: Doc) -> str:
    """Where the torrent stands on disk, in words: not located, located, verified, failed."""
    if doc.get("unavailable"):
        reason = doc["unavailable"].get("reason")
        return f"Unavailable ({reason})" if reason else "Unavailable"
    location = doc.get("location")
    if not location:
        return "Not on disk"
    verification = location.get("verified") or {}
    status = verification.get("status")
    if status == "verified":
        return "Verified"
    if status == "failed":
        return f"Failed verification (piece {verification.get('piece')})"
    if status == "not_verifiable":
        return "On disk, cannot be verified"
    return "On disk, not verified"


def make_rows(docs: list[Doc]) -> list[Row]:
    """The list's rows, with every torrent's tracker numbers read in one go."""
    counts = tracker_counts([d["info_hash"] for d in docs])
    return [
        Row(
            info_hash=d["info_hash"],
            title=d.get("title") or d.get("name") or d["info_hash"],
            size=int(d.get("size") or 0),
            file_count=int(d.get("file_count") or 0),
            verified=verified_words(d),
            counts=counts[d["info_hash"]],
        )
        for d in docs
    ]


def browse_docs(sort: str, page: int) -> tuple[list[Doc], bool]:
    """One page of every torrent, newest first or by title; and whether more follow.

    A keyed view orders them (torrents/by_registered, torrents/by_title): one
    read of a page's documents, whatever the registry's size (skip grows with
    the page number, as pages far down are rare).
    """
    by_name = sort == "name"
    rows = context().db.view(
        "torrents",
        "by_title" if by_name else "by_registered",
        descending=not by_name,
        include_docs=True,
        skip=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE + 1,
    )
    docs = [row["doc"] for row in rows if row.get("doc")]
    return docs[:PAGE_SIZE], len(docs) > PAGE_SIZE


def search_docs(query: str, page: int) -> tuple[list[Doc], bool]:
    """One page of the title search (every word must match); and whether more follow."""
    start = (page - 1) * PAGE_SIZE
    found = queries.search_torrents(context().db, query, limit=start + PAGE_SIZE + 1)
    return found[start : start + PAGE_SIZE], len(found) > start + PAGE_SIZE


def page_number(raw: str | None) -> int:
    """The ?page= asked for: a whole number from 1; anything else is the first page."""
    value = whole_number(raw) if raw else None
    return value if value is not None and 0 < value < 100_000 else 1


def page_link(query: str, sort: str, page: int) -> str:
    params = {"q": query} if query else {"sort": sort}
    return url_for("library.browse") + "?" + urlencode({**params, "page": page})


def counts_url(info_hashes: list[str]) -> str:
    return url_for("library.counts") + "?" + urlencode([("info_hash", h) for h in info_hashes])


# ---------------------------------------------------------------- pages


@bp.get("/library")
@login_required
def browse() -> Response:
    """Every torrent, newest first or by name, or the title search (?q=). Who: any person.

    A query without a letter or digit, or too common to narrow anything, is
    answered with the page and the reason in words (400).
    """
    query = request.args.get("q", "").strip()
    sort = request.args.get("sort", "newest")
    sort = sort if sort in SORTS else "newest"
    page = page_number(request.args.get("page"))
    error = None
    try:
        docs, more = search_docs(query, page) if query else browse_docs(sort, page)
    except InvalidQueryError as refused:
        docs, more, error = [], False, refused
    rows = make_rows(docs)
    person = viewer()
    html = render_page(
        "library/browse.html",
        title=f"Torrents matching “{query}”" if query else "Torrents",
        query=query,
        sort=sort,
        sorts=SORTS,
        can_upload=has_role(person, UPLOADER) if person else False,
        rows=rows,
        page=page,
        previous_url=page_link(query, sort, page - 1) if page > 1 else None,
        next_url=page_link(query, sort, page + 1) if more else None,
        counts_url=counts_url([r.info_hash for r in rows]) if rows else None,
        error=page_reason(error.code, error.reason) if error else "",
    )
    return _page_response(html, error.status if error else 200)


@bp.get("/library/counts")
@login_required
def counts() -> Response:
    """Fresh tracker numbers for ?info_hash=… (repeated): spans htmx swaps in by id.

    Who: any person. Unknown or malformed hashes are left out, not refused:
    the fragment only refreshes what a page already shows.
    """
    wanted = [h.lower() for h in request.args.getlist("info_hash")[:MAX_COUNTS]]
    valid = [h for h in dict.fromkeys(wanted) if _is_info_hash(h)]
    html = render_page("library/_counts.html", title="", counts=tracker_counts(valid))
    return _page_response(html, 200)


@bp.get("/library/upload")
@role_required(UPLOADER)
def upload_form() -> Response:
    """The upload form: a .torrent file and/or Gazelle JSON. Who: uploaders and admins."""
    return _upload_page({})


@bp.post("/library/upload")
@role_required(UPLOADER)
def upload() -> Response:
    """Register an upload as POST /api/torrents does; then show the torrent's page (303).

    Errors show the form again with what was typed (not the file) and the
    API's status: 400 for bad input, 409 for a site torrent id known under
    another info hash, 413 for a body over server.max_body_bytes.
    """
    try:
        person = check_form_csrf()
        fields = {name: request.form.get(name, "") for name in FORM_FIELDS}
    except RequestEntityTooLarge:
        limit = context().settings.server.max_body_bytes
        return _upload_page({}, f"The upload is larger than the {limit:,} bytes allowed.", 413)
    try:
        upload = upload_from_form(fields, _chosen_file())
        ctx = context()
        report = register.register_upload(ctx.db, upload, actor=person.name, now=ctx.clock())
    except MissingFieldError:
        words = "Choose a .torrent file or paste the Gazelle JSON (or both)."
        return _upload_page(fields, words, 400)
    except ApiError as refused:
        return _upload_page(fields, page_reason(refused.code, refused.reason), refused.status)
    target = url_for("library.torrent", info_hash=report["info_hash"])
    return see_other(f"{target}?{urlencode({'uploaded': report['status']})}")


@bp.get("/library/<info_hash>")
@login_required
def torrent(info_hash: str) -> Response:
    """A torrent: files and where they live, verification, tracker numbers, the download.

    Who: any person. 400 for a malformed info hash, 404 for an unknown one
    (the error page).
    """
    ctx = context()
    doc = queries.get_torrent(ctx.db, keys.check_info_hash(info_hash))
    tracked = ctx.db.get_or_none(tracked_doc_id(doc["info_hash"])) or {}
    person = viewer()
    passkey = people.get_passkey(ctx.db, person.name) if person else None
    view = queries.reseed_view(doc)
    html = render_page(
        "library/torrent.html",
        title=view["title"] or view["name"] or doc["info_hash"],
        torrent=view,
        files=_file_rows(doc, view["files"]),
        verified=verified_words(doc),
        counts=tracker_counts([doc["info_hash"]])[doc["info_hash"]],
        counts_url=counts_url([doc["info_hash"]]),
        tracked=bool(tracked.get("registered")),
        has_passkey=bool(passkey),
        announce_base=announce_base(ctx.settings),
        uploaded=UPLOADED.get(request.args.get("uploaded", "")),
    )
    return _page_response(html, 200)


# ---------------------------------------------------------------- helpers


def _file_rows(doc: Doc, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reseed view's files with whether each is BEP 47 padding (never on disk)."""
    pads = [bool(f.get("pad")) for f in doc.get("files") or []]
    return [dict(f, pad=pad) for f, pad in zip(files, pads, strict=True)]


def _chosen_file() -> FileStorage | None:
    """The form's .torrent, or None when no file was chosen (browsers send an empty part)."""
    file = request.files.get("torrent")
    return file if file is not None and file.filename else None


def _is_info_hash(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdef" for c in value)


def _upload_page(fields: dict[str, str], error: str = "", status: int = 200) -> Response:
    html = render_page("library/upload.html", title="Upload a torrent", form=fields, error=error)
    return _page_response(html, status)


def _page_response(html: str, status: int) -> Response:
    """The page, not cached: counts change, and forms may hold what was typed."""
    response = current_app.response_class(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response
