"""The server-rendered web UI: pages for people, beside the JSON API.

Pages are Flask views rendering Jinja templates (app/web/templates), with
small progressive enhancement: htmx for live parts and uPlot for charts,
both vendored from npm (package.json) and served by the app itself
(app/web/assets.py), never from a CDN. Every page reads without JavaScript.

`register_pages(app)` wires it all: the page blueprints, the security
headers on every response (pages and API alike), the asset route, the Jinja
globals, and an HTML 404/405 page for browsers on unknown URLs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from app.accounts import sessions

# No inline scripts or styles anywhere (templates load .js and .css files), so the
# policy needs no 'unsafe-inline': an injected <script> or on*= attribute never runs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # no framing: clickjacking (CSP frame-ancestors for new browsers)
    # passkeys and invite secrets appear in some URLs: never sent to another site (a
    # same-site Referer brings a browser back to its form after a login, app/web/pages.py)
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# Paths of the JSON API and the original clients' endpoints: their errors stay
# JSON whatever the caller accepts, as their clients parse them.
API_PREFIXES = ("/api", "/metadata", "/torrents", "/stats", "/assets")
SITE_NAME = "distleech"


def register_pages(app: Flask) -> None:
    """Register the pages, the asset route, the Jinja globals and the headers on every response.

    Call after register_error_handlers and register_blueprints: the HTML 404
    for browsers wraps the JSON handler those installed.
    """
    from app.web import (
        admin,
        assets,
        auth_pages,
        dashboard,
        inventory,
        library,
        pages,
        profile,
        queues,
    )

    page_modules = (dashboard, inventory, library, profile, admin, queues)
    for blueprint in (pages.bp, auth_pages.bp, assets.bp, *(m.bp for m in page_modules)):
        app.register_blueprint(blueprint)
    app.after_request(add_security_headers)
    app.jinja_env.globals.update(
        asset_url=assets.asset_url, csrf_field=sessions.CSRF_FIELD, site_name=SITE_NAME
    )
    register_html_routing_errors(app)


def add_security_headers(response: Response) -> Response:
    """Add the security headers to every response; a view may set its own first.

    A page rendered for a logged-in person holds their CSRF token and what only
    they may see: no cache keeps it (`g.web_viewer` is set by app/web/pages.py).
    """
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if g.get("web_viewer") is not None:
        response.headers.setdefault("Cache-Control", "private, no-store")
    return response


def register_html_routing_errors(app: Flask) -> None:
    """Answer a browser's unknown URL (404) or wrong method (405) with the HTML error page.

    API clients keep the JSON body of app/errors.py: only a request whose
    Accept prefers text/html to JSON, outside the API paths, gets a page.
    """
    from app.web.pages import render_error_page

    as_json: Callable[[HTTPException], Any] | None = app.error_handler_spec[None][None].get(
        HTTPException
    )

    def routing_error(error: HTTPException) -> Any:
        if wants_html_page():
            page = render_error_page(error.code or 500, None, error.description or "")
            if isinstance(error, MethodNotAllowed) and error.valid_methods:
                page.headers["Allow"] = ", ".join(error.valid_methods)
            return page
        if as_json is not None:
            return as_json(error)
        response = jsonify({"error": "not_found", "reason": error.description})
        response.status_code = error.code or 500
        return response

    app.register_error_handler(NotFound, routing_error)
    app.register_error_handler(MethodNotAllowed, routing_error)


def wants_html_page() -> bool:
    """Whether a browser asks (Accept prefers text/html to JSON), outside the API's paths."""
    path = request.path
    if any(path == prefix or path.startswith(prefix + "/") for prefix in API_PREFIXES):
        return False
    preferred = request.accept_mimetypes.best_match(("application/json", "text/html"))
    return preferred == "text/html"
