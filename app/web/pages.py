"""Shared helpers for page views: who is looking, access rules, CSRF, rendering, errors.

Page modules (dashboard, torrents, profile, admin, ...) build their blueprint
with `page_blueprint(name, __name__)`, so every error they raise is shown as
a page in words (never JSON, never a stack trace), and use:

- `viewer() -> Principal | None`: the person logged in with a session cookie.
- `@login_required`: anonymous browsers go to /login?next=<this page>.
- `@role_required("uploader")`: also refuses other roles with a 403 page
  (admins pass everything; an uploader is also a member).
- `check_form_csrf() -> Principal`: first line of every POST page handler.
- `render_page(template, title=..., **context) -> str`: the template with
  `viewer`, `csrf_token`, `nav` and `title` available.
- `render_error_page(status, code, reason) -> Response`, `see_other(location)`,
  `safe_next(value)`.

This module also holds the blueprint `web`, which carries the templates and
the /static/web/ files; each page module has a blueprint of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, current_app, g, render_template, request
from werkzeug.exceptions import HTTPException

from app.accounts import sessions
from app.accounts.auth import ADMIN, MEMBER, Principal, may_act_as
from app.api.web import context
from app.errors import (
    HOW_TO_AUTHENTICATE,
    ApiError,
    AuthenticationRequiredError,
    ForbiddenError,
    InvalidCredentialsError,
    TooManyAttemptsError,
)
from app.store.couch import CouchUnavailableError
from app.store.events import ConcurrencyError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Codes whose API reason talks to scripts (headers, endpoints): what a person reads instead.
PAGE_REASONS = {
    "authentication_required": "Log in to see this page.",
    "csrf_failed": "This form is out of date or came from another page."
    " Reload the page and send it again.",
    "cross_site_request": "This form was sent from another site's page, so nothing was"
    " changed. Use the form on this site.",
    "database_unavailable": "The database did not answer. Try again in a minute.",
    "try_again": "The server was busy with the same records. Send it again.",
    "internal_error": "Something went wrong on our side. Try again, and tell an admin"
    " if it keeps happening.",
}


@dataclasses.dataclass(frozen=True)
class NavItem:
    """A link of the main navigation; `current` marks the page being shown."""

    label: str
    href: str
    current: bool = False


# (label, path, who sees it): the main navigation for logged-in people.
NAV = (
    ("Dashboard", "/", MEMBER),
    ("Inventory", "/inventory", MEMBER),
    ("Torrents", "/library", MEMBER),
    ("Profile", "/profile", MEMBER),
    ("Admin", "/admin", ADMIN),
)


def page_blueprint(name: str, import_name: str, **options: Any) -> Blueprint:
    """A Blueprint whose views' errors are answered with the HTML error page.

    The app's handlers (app/errors.py) answer JSON, right for the API but not
    for a person; these run first for this blueprint's routes only.
    """
    bp = Blueprint(name, import_name, **options)
    bp.register_error_handler(ApiError, _api_error_page)
    bp.register_error_handler(HTTPException, _http_error_page)
    bp.register_error_handler(404, _http_error_page)  # else the app's 404 handler wins
    bp.register_error_handler(405, _http_error_page)
    bp.register_error_handler(CouchUnavailableError, _couch_down_page)
    bp.register_error_handler(ConcurrencyError, _contended_page)
    bp.register_error_handler(Exception, _unexpected_page)
    return bp


def viewer() -> Principal | None:
    """The person logged in with a session cookie, or None (cached for this request).

    A stale or ended cookie counts as logged out. Tokens and basic auth are
    for scripts: a page needs a login session, whose CSRF token its forms carry.
    """
    if "web_viewer" not in g:
        g.web_viewer = _identify_person()
    person: Principal | None = g.web_viewer
    return person


def _identify_person() -> Principal | None:
    try:
        principal = context().auth.identify(request)
    except (InvalidCredentialsError, TooManyAttemptsError):
        return None  # an ended session, or a browser's stale basic-auth header
    if principal is None or not principal.csrf:
        return None
    return principal


def has_role(person: Principal, *roles: str) -> bool:
    """Whether the person may act in one of `roles`: the API's rule (app.accounts.auth),
    so admins always may and an uploader may what a member may."""
    return may_act_as(person.role, roles)


def login_required(view: F) -> F:
    """Send anonymous browsers to the login page, which brings them back here after."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if viewer() is None:
            login = "/login?" + urlencode({"next": come_back_to()})
            if request.headers.get("HX-Request") == "true":
                # htmx would swap the login page into the part it refreshes: the
                # whole tab goes to log in instead (back to the page, not the part)
                response = render_error_page(401, "authentication_required", "")
                response.headers["HX-Redirect"] = login
                return response
            return see_other(login)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def come_back_to() -> str:
    """Where a login should bring the browser back: this page, or for a form sent
    after the session ended, the page the form was on (its POST-only URL would be 405)."""
    if request.headers.get("HX-Request") == "true":
        return _same_site_path(request.headers.get("HX-Current-URL"))
    if request.method == "GET":
        here = request.path
        if request.query_string:
            here += "?" + request.query_string.decode("utf-8", "replace")
        return here
    return _same_site_path(request.referrer)


def _same_site_path(url: str | None) -> str:
    """The path (and query) of a URL of this site, else "/"."""
    parts = urlsplit(url or "")
    if parts.netloc == request.host and parts.path.startswith("/"):
        return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""))
    return "/"


def role_required(*roles: str) -> Callable[[F], F]:
    """Let only people in one of `roles` see the page (admins always): else a 403 page.

    Implies login_required. The 403 is rendered here, not raised, so it is a
    page even in a blueprint not made with page_blueprint.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            person = viewer()
            if person is not None and not has_role(person, *roles):
                error = ForbiddenError(f"This page is for: {', '.join(roles)}.")
                return render_error_page(error.status, error.code, error.reason)
            return view(*args, **kwargs)

        return login_required(wrapper)  # type: ignore[return-value]

    return decorate


def check_form_csrf() -> Principal:
    """Refuse (403 csrf_failed) a form posted with a session but without its CSRF token.

    Call first in every POST page handler that acts for the viewer; returns
    the viewer. Without a session: 401 (log in first).
    """
    person = viewer()
    if person is None:
        raise AuthenticationRequiredError("Your login session has ended; log in again.")
    sessions.check_csrf(person.csrf, request.form.get(sessions.CSRF_FIELD))
    return person


def render_page(template: str, *, title: str, **page: Any) -> str:
    """Render a page template with the viewer, its CSRF token, the nav and the title.

    Returns the HTML; a view answering another status returns (html, status).
    """
    person = viewer()
    return render_template(
        template,
        title=title,
        viewer=person,
        csrf_token=person.csrf if person else "",
        nav=nav_for(person),
        **page,
    )


def nav_for(person: Principal | None) -> list[NavItem]:
    """The main navigation this person may use (none before logging in)."""
    if person is None:
        return []
    path = request.path
    return [
        NavItem(label, href, path == href or (href != "/" and path.startswith(href + "/")))
        for label, href, role in NAV
        if has_role(person, role)
    ]


def see_other(location: str) -> Response:
    """A 303 See Other to `location`: after a form, the browser GETs the next page."""
    response = current_app.response_class(status=303)
    response.headers["Location"] = location
    return response


def safe_next(value: str | None, default: str = "/") -> str:
    """`value` if it is a path on this site, else `default`: never an open redirect.

    Only "/..." counts; "//host", "/\\host" and control characters (which
    browsers drop, turning "/\\t/host" into "//host") lead elsewhere.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return default
    return value


def page_reason(code: str | None, reason: str) -> str:
    """What a person reads for an error: words for them, not the API's advice to scripts."""
    if code in PAGE_REASONS:
        return PAGE_REASONS[code]
    return reason.removesuffix(" " + HOW_TO_AUTHENTICATE)


def render_error_page(status: int, code: str | None, reason: str) -> Response:
    """The HTML error page: the status in words and what to do, never a stack trace."""
    try:
        person = viewer()
    except Exception:  # an error page must render even when nobody can be looked up
        person = None
    html = render_template(
        "error.html",
        title=_status_phrase(status),
        status=status,
        message=page_reason(code, reason),
        viewer=person,
        csrf_token=person.csrf if person else "",
        nav=nav_for(person),
    )
    return current_app.response_class(html, status=status, mimetype="text/html")


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _api_error_page(error: ApiError) -> Response:
    response = render_error_page(error.status, error.code, error.reason)
    if isinstance(error, TooManyAttemptsError):
        response.headers["Retry-After"] = str(error.details.get("retry_after", 60))
    return response


def _http_error_page(error: HTTPException) -> Response:
    status = error.code or 500
    return render_error_page(status, None, error.description or _status_phrase(status))


def _couch_down_page(error: CouchUnavailableError) -> Response:
    log.error("CouchDB unavailable: %s", error)
    return render_error_page(503, "database_unavailable", "")


def _contended_page(error: ConcurrencyError) -> Response:
    response = render_error_page(503, "try_again", str(error))
    response.headers["Retry-After"] = "1"
    return response


def _unexpected_page(error: Exception) -> Response:
    log.exception("unhandled error on a page")
    return render_error_page(500, "internal_error", "")


bp = page_blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",  # /static/ itself is the app's (empty) static folder
)
