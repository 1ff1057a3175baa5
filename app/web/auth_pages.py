"""The login, logout and register pages: the browser's side of app/api/accounts.py.

They call the same operations as the API (open_session, set_session_cookie,
end_session, invites.register), so a login through the page is limited,
recorded and ended exactly like one through POST /api/session. A failed
form comes back with the error in words and what was typed, except the
password.
"""

from __future__ import annotations

from flask import Response, current_app, request, url_for

from app.accounts import invites
from app.accounts.auth import MIN_PASSWORD_LENGTH, NAME_PATTERN_HELP, PASSWORD_RULE
from app.api.accounts import end_session, open_session, set_session_cookie
from app.api.web import context
from app.errors import (
    AlreadyExistsError,
    ApiError,
    InvalidCredentialsError,
    InvalidInviteError,
    TooManyAttemptsError,
    ValidationFailedError,
)
from app.web.pages import (
    check_form_csrf,
    page_blueprint,
    page_reason,
    render_page,
    safe_next,
    see_other,
    viewer,
)

bp = page_blueprint("auth_pages", __name__)

# The API's limits on the same fields (app/api/accounts.py): longer is never valid.
MAX_NAME, MAX_PASSWORD, MAX_INVITE = 64, 1024, 200


@bp.get("/login")
def login_form() -> Response:
    """The login form; someone already logged in goes straight on to `next`."""
    next_path = safe_next(request.args.get("next"))
    if viewer() is not None:
        return see_other(next_path)
    return _login_page("", next_path)


@bp.post("/login")
def login() -> Response:
    """Log in: set the session cookie and go on to `next` (or the dashboard).

    A failure shows the form again: 400 for an empty field, 401 for a wrong
    name or password, 429 (with Retry-After) after too many failures.
    """
    next_path = safe_next(request.form.get("next"))
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    if not name or not password:
        return _login_page(name, next_path, ValidationFailedError("Enter your name and password."))
    if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
        return _login_page(name, next_path, InvalidCredentialsError("Wrong user name or password."))
    try:
        secret, _ = open_session(name, password)
    except (InvalidCredentialsError, TooManyAttemptsError) as error:
        return _login_page(name, next_path, error)
    response = see_other(next_path)
    set_session_cookie(response, secret)
    return response


def _login_page(name: str, next_path: str, error: ApiError | None = None) -> Response:
    html = render_page(
        "login.html", title="Log in", name=name, next_path=next_path, error=_words(error)
    )
    response = _form_response(html, error)
    if isinstance(error, TooManyAttemptsError):
        response.headers["Retry-After"] = str(error.details.get("retry_after", 60))
    return response


@bp.post("/logout")
def logout() -> Response:
    """Log out: the stored session is deleted, so a copied cookie stops working too.

    With a live session the form must carry its CSRF token (403 otherwise), so
    another site cannot log people out; an ended session is just forgotten.
    """
    if viewer() is not None:
        check_form_csrf()
    response = see_other(url_for("auth_pages.login_form"))
    end_session(response)
    return response


@bp.get("/register")
def register_form() -> Response:
    """The registration form, with the invite's secret from the link filled in."""
    return _register_page(request.args.get("invite", "").strip(), "")


@bp.post("/register")
def register() -> Response:
    """Register with an invite, then log the new member in and show the dashboard.

    Errors show the form again: 400 (passwords differ, name or password
    rules, invalid_invite), 409 (name taken).
    """
    form = request.form
    invite, name = form.get("invite", "").strip(), form.get("name", "").strip()
    password = form.get("password", "")
    error = _check_register_fields(invite, name, password, form.get("password_again", ""))
    if error is None:
        ctx = context()
        try:
            invites.register(ctx.db, invite, name, password, now=ctx.clock())
        except (InvalidInviteError, AlreadyExistsError, ValidationFailedError) as refused:
            error = refused
    if error is not None:
        return _register_page(invite, name, error)
    try:
        secret, _ = open_session(name, password)
    except (InvalidCredentialsError, TooManyAttemptsError):
        # the account exists; only this login was refused (e.g. the address's limit)
        return see_other(url_for("auth_pages.login_form"))
    response = see_other(url_for("dashboard.home"))
    set_session_cookie(response, secret)
    return response


def _check_register_fields(invite: str, name: str, password: str, again: str) -> ApiError | None:
    """What is wrong before asking the store: differing or overlong fields (400)."""
    if password != again:
        return ValidationFailedError("The two passwords differ; type the same password twice.")
    if len(invite) > MAX_INVITE:
        return InvalidInviteError("No invite has this secret; ask for a new link.")
    if len(password) > MAX_PASSWORD:
        return ValidationFailedError(f"A password has at most {MAX_PASSWORD} characters.")
    return None


def _register_page(invite: str, name: str, error: ApiError | None = None) -> Response:
    html = render_page(
        "register.html",
        title="Register",
        invite=invite,
        name=name,
        error=_words(error),
        min_password_length=MIN_PASSWORD_LENGTH,
        password_rule=PASSWORD_RULE,
        name_help=NAME_PATTERN_HELP,
    )
    return _form_response(html, error)


def _words(error: ApiError | None) -> str:
    return page_reason(error.code, error.reason) if error is not None else ""


def _form_response(html: str, error: ApiError | None) -> Response:
    """The form page; never cached, as it may hold an invite's secret or a name."""
    status = error.status if error else 200
    response = current_app.response_class(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response
