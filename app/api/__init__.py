"""HTTP blueprints: parse, call an operation, return JSON."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app, request

from app.errors import CrossSiteRequestError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def register_blueprints(app: Flask) -> None:
    from app.api import (
        accounts,
        admin,
        archive,
        cache,
        events,
        ingest,
        metadata,
        people,
        sites,
        sources,
        stats,
        storage,
        tokens,
        torrents,
        tracker,
    )

    app.before_request(refuse_cross_site_writes)
    app.before_request(allow_large_uploads)
    modules = (
        *(metadata, archive, stats, admin, torrents, ingest, cache, tracker, sites),
        *(accounts, people, tokens, sources, events, storage),
    )
    for module in modules:
        app.register_blueprint(module.bp)


# Inventory uploads may be far larger than any other body (server.max_upload_bytes).
UPLOAD_ENDPOINTS = frozenset({"admin.import_csv", "queue_pages.import_upload"})


def allow_large_uploads() -> None:
    """Raise the body limit for the inventory uploads before anything reads the body.

    It must happen here: the CSRF check of a session reads the form (and so
    the whole body) before the view runs, under the ordinary limit.
    """
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = current_app.extensions[
            "distleech"
        ].settings.server.max_upload_bytes


LEASING_GETS = frozenset({"metadata.lease_metadata", "archive.lease_next", "sources.lease_next"})


def refuse_cross_site_writes() -> None:
    """Refuse a browser's write that another site's page started (CSRF): 403.

    A browser attaches the basic-auth credentials it holds to any request to
    this host, also to a form or fetch() that another site's page sends, and
    forms need no CORS preflight. JSON endpoints take only application/json
    (app.api.web), which such a page cannot send, but the form endpoints (POST
    /torrents, the Patchwork queue, the CSV upload) stay forms for their
    clients. Browsers say where a request comes from (Sec-Fetch-Site, else
    Origin); scripts and workers send neither, so they are never refused.
    Two GETs change state (they lease work, as the original clients expect)
    and are guarded like writes: an <img> on another page must not make an
    admin's browser lease albums.
    """
    if request.method in SAFE_METHODS and request.endpoint not in LEASING_GETS:
        return
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site in ("same-origin", "none"):
            return
        raise CrossSiteRequestError(
            f"A browser sent this {request.method} from another site's page ({fetch_site});"
            " call the API from a script or a worker instead."
        )
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise CrossSiteRequestError(
            f"A browser sent this {request.method} from {origin}, another site;"
            " call the API from a script or a worker instead."
        )
