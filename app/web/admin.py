"""Admin pages at `/admin`: people, invites, tokens, whitelist, tracked torrents.

Admins only (`role_required("admin")`). Every form calls the operation its
API twin calls, with the same rules: PATCH /api/users/<name>
(`change_person_as`: no admin demotes or disables themselves), DELETE
/api/invites/<id>, /api/tokens, /api/whitelist, DELETE /api/torrent/<hash>.
A form that worked sends the browser back (303) with `?done=<key>`, shown
as a message; one that failed shows the page again with the error in words
and the error's status. A new token is shown once, in the answer to its form.
The queue pages under /admin/queues live in app/web/queues.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request, url_for

from app.accounts import invites, people
from app.accounts.auth import TOKEN_ROLES, list_tokens
from app.api.accounts import revoke_invite_as
from app.api.people import change_person_as
from app.api.tokens import issue_token_as, revoke_token_as
from app.api.web import context
from app.errors import ApiError, ValidationFailedError
from app.tracker import accounts, peersdb
from app.web.pages import (
    check_form_csrf,
    page_blueprint,
    page_reason,
    render_page,
    role_required,
    see_other,
)
from app.web.profile import format_totals

bp = page_blueprint("admin_pages", __name__)

# ?done=<key> after a form: the message shown (only these; the URL never carries text).
DONE = {
    "role": "The role was changed.",
    "invites-allowed": "They may invite members now.",
    "invites-forbidden": "They may no longer invite.",
    "disabled": "Disabled: their sessions have ended and the tracker refuses their passkey.",
    "enabled": "Enabled: they can log in again, with the same passkey.",
    "invite-revoked": "The invite was revoked; its link no longer works.",
    "token-revoked": "Revoked: the token no longer works.",
    "whitelist-added": "The client was added to the whitelist.",
    "whitelist-removed": "The client was removed from the whitelist.",
    "unregistered": "The tracker no longer tracks that torrent.",
}
# (title, path, what it is for): the admin index.
SECTIONS = (
    ("People and invites", "/admin/people", "Roles, the right to invite, disabling; every invite."),
    ("Tokens", "/admin/tokens", "Worker and queuer tokens: issue and revoke."),
    ("Client whitelist", "/admin/whitelist", "Which BitTorrent clients may announce."),
    ("Tracked torrents", "/admin/tracked", "What the tracker serves, with live swarms."),
    ("Queues", "/admin/queues", "Leases, CSV import and the archive queue."),
)
BOOLEANS = {"true": True, "false": False}


@bp.get("/admin")
@role_required("admin")
def index() -> Response:
    """The admin pages, one link each. Who: admins."""
    return _page("admin/index.html", "Admin", sections=SECTIONS)


# ---------------------------------------------------------------- people and invites


@bp.get("/admin/people")
@role_required("admin")
def people_page() -> Response:
    """Every person with role, state, right to invite and totals; every invite. Who: admins."""
    return _people_page()


@bp.post("/admin/people/<name>")
@role_required("admin")
def change_person(name: str) -> Response:
    """Change a person's role, right to invite or state (as PATCH /api/users/<name>).

    The form sends one of `role`, `can_invite` or `disabled` ("true"/"false").
    Errors: 400 (bad value), 403 (yourself), 404 (no such person).
    """
    admin = check_form_csrf()
    try:
        change = _person_change(request.form)
        change_person_as(admin, name, change)
    except ApiError as error:
        return _people_page(error)
    return _done("admin_pages.people_page", _change_done(change), f"person-{name}")


def _person_change(form: Any) -> dict[str, Any]:
    """The change a form asks for, as PATCH /api/users/<name> takes it."""
    change: dict[str, Any] = {}
    if "role" in form:
        change["role"] = form["role"]
    for field in ("can_invite", "disabled"):
        if field in form:
            if form[field] not in BOOLEANS:
                raise ValidationFailedError(f"{field} is true or false.")
            change[field] = BOOLEANS[form[field]]
    if not change:
        raise ValidationFailedError("Choose a role, the right to invite, or the state.")
    return change


def _change_done(change: dict[str, Any]) -> str:
    if "disabled" in change:
        return "disabled" if change["disabled"] else "enabled"
    if "can_invite" in change:
        return "invites-allowed" if change["can_invite"] else "invites-forbidden"
    return "role"


@bp.post("/admin/invites/<invite_id>/revoke")
@role_required("admin")
def revoke_invite(invite_id: str) -> Response:
    """Revoke an open invite, anyone's (as DELETE /api/invites/<id>). Who: admins."""
    admin = check_form_csrf()
    return _act(
        lambda: revoke_invite_as(admin, invite_id),
        _people_page,
        "admin_pages.people_page",
        "invite-revoked",
        "invites",
    )


def _people_page(error: ApiError | None = None) -> Response:
    db = context().db
    shown = [p | {"totals": format_totals(p)} for p in people.list_people_shown(db)]
    all_invites = [invites.public_invite(doc) for doc in invites.list_invites(db)]
    return _page(
        "admin/people.html",
        "People and invites",
        error,
        people=shown,
        roles=people.PERSON_ROLES,
        invites=all_invites,
    )


# ---------------------------------------------------------------- tokens


@bp.get("/admin/tokens")
@role_required("admin")
def tokens_page() -> Response:
    """Worker and queuer tokens by name, role and state (never a token). Who: admins."""
    return _tokens_page()


@bp.post("/admin/tokens")
@role_required("admin")
def issue_token() -> Response:
    """Issue a token (as POST /api/tokens) and show it, this once (201). Who: admins."""
    admin = check_form_csrf()
    name, role = request.form.get("name", "").strip(), request.form.get("role", "")
    try:
        issued = issue_token_as(admin, name, role)
    except ApiError as error:
        return _tokens_page(error, name=name, role=role)
    return _tokens_page(issued=issued, status=201)


@bp.post("/admin/tokens/<name>/revoke")
@role_required("admin")
def revoke_token(name: str) -> Response:
    """Revoke every active token with this name (as DELETE /api/tokens/<name>). Who: admins."""
    admin = check_form_csrf()
    return _act(
        lambda: revoke_token_as(admin, name),
        _tokens_page,
        "admin_pages.tokens_page",
        "token-revoked",
    )


def _tokens_page(
    error: ApiError | None = None,
    *,
    issued: dict[str, Any] | None = None,
    status: int = 200,
    **typed: str,
) -> Response:
    return _page(
        "admin/tokens.html",
        "Tokens",
        error,
        status=status,
        tokens=list_tokens(context().db),
        roles=TOKEN_ROLES,
        issued=issued,
        typed=typed,
    )


# ---------------------------------------------------------------- whitelist


@bp.get("/admin/whitelist")
@role_required("admin")
def whitelist_page() -> Response:
    """The client whitelist by prefix (empty: every client may announce). Who: admins."""
    return _whitelist_page()


@bp.post("/admin/whitelist")
@role_required("admin")
def add_whitelist_entry() -> Response:
    """Allow a client by peer_id prefix (as POST /api/whitelist). Who: admins.

    Errors: 400 invalid_prefix, 409 whitelist_entry_exists; the form keeps what was typed.
    """
    admin = check_form_csrf()
    prefix, client = request.form.get("prefix", ""), request.form.get("client", "").strip()
    try:
        if not client:
            raise ValidationFailedError("Name the client (e.g. qBittorrent).")
        ctx = context()
        accounts.add_whitelist_entry(ctx.db, prefix, client, actor=admin.holder, now=ctx.clock())
    except ApiError as error:
        return _whitelist_page(error, prefix=prefix, client=client)
    return _done("admin_pages.whitelist_page", "whitelist-added")


@bp.post("/admin/whitelist/remove")
@role_required("admin")
def remove_whitelist_entry() -> Response:
    """Remove a prefix from the whitelist (as DELETE /api/whitelist/<prefix>). Who: admins."""
    admin = check_form_csrf()
    ctx, prefix = context(), request.form.get("prefix", "")
    return _act(
        lambda: accounts.remove_whitelist_entry(
            ctx.db, prefix, actor=admin.holder, now=ctx.clock()
        ),
        _whitelist_page,
        "admin_pages.whitelist_page",
        "whitelist-removed",
    )


def _whitelist_page(error: ApiError | None = None, **typed: str) -> Response:
    entries = accounts.list_whitelist(context().db)
    return _page("admin/whitelist.html", "Client whitelist", error, entries=entries, typed=typed)


# ---------------------------------------------------------------- tracked torrents


@bp.get("/admin/tracked")
@role_required("admin")
def tracked_page() -> Response:
    """Tracked torrents with snatches and live seeders/leechers. Who: admins."""
    return _tracked_page()


@bp.post("/admin/tracked/<info_hash>/unregister")
@role_required("admin")
def unregister_torrent(info_hash: str) -> Response:
    """Stop tracking a torrent (as DELETE /api/torrent/<hash>); uploads will not bring it back."""
    admin = check_form_csrf()
    ctx = context()
    return _act(
        lambda: accounts.unregister_torrent(ctx.db, info_hash, actor=admin.holder, now=ctx.clock()),
        _tracked_page,
        "admin_pages.tracked_page",
        "unregistered",
    )


def _tracked_page(error: ApiError | None = None) -> Response:
    ctx = context()
    live = peersdb.swarm_counts(ctx.peers_db)
    rows = []
    for doc in ctx.db.iter_prefix(f"{accounts.TRACKED}:"):
        if doc.get("type") == accounts.TRACKED and doc.get("registered"):
            seeders, leechers = live.get(doc["info_hash"], (0, 0))
            rows.append(accounts.public_tracked(doc) | {"seeders": seeders, "leechers": leechers})
    rows.sort(key=lambda row: row["torrent_id"])
    return _page("admin/tracked.html", "Tracked torrents", error, torrents=rows)


# ---------------------------------------------------------------- shared


def _act(
    action: Callable[[], Any],
    page: Callable[[ApiError], Response],
    back: str,
    done: str,
    anchor: str = "",
) -> Response:
    """Run a form's operation: to `back` with `done` (303), or `page` with the error in words."""
    try:
        action()
    except ApiError as error:
        return page(error)
    return _done(back, done, anchor)


def _done(endpoint: str, done: str, anchor: str = "") -> Response:
    return see_other(url_for(endpoint, done=done) + (f"#{anchor}" if anchor else ""))


def _page(
    template: str, title: str, error: ApiError | None = None, *, status: int = 200, **page: Any
) -> Response:
    """An admin page with the `?done=` message or the error (whose status it answers).

    Never cached: it shows people and, after a form, a token.
    """
    html = render_page(
        template,
        title=title,
        done=DONE.get(request.args.get("done", ""), "") if request.method == "GET" else "",
        error=page_reason(error.code, error.reason) if error else "",
        **page,
    )
    response = current_app.response_class(
        html, status=error.status if error else status, mimetype="text/html"
    )
    response.headers["Cache-Control"] = "private, no-store"
    return response
