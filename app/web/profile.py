"""The member's profile at `/profile`: totals, passkey, password, invites.

Any logged-in person sees and changes only their own. Every form calls the
operation its API twin calls (app/api/people.py, app/api/accounts.py), so
the rules are the API's: rotate the passkey (POST /api/profile/passkey),
change the password (POST /api/password), create, list and revoke invites
(/api/invites). The page holds the passkey, so it is never cached; an
invite's link is shown once, in the answer to the form that created it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request, url_for

from app.accounts import people
from app.accounts.auth import ADMIN, MIN_PASSWORD_LENGTH, PASSWORD_RULE, Principal
from app.accounts.invites import INVITE_ROLES, MAX_DAYS, public_invite
from app.api.accounts import (
    change_own_password,
    create_invite_as,
    end_session,
    invites_visible_to,
    open_session,
    revoke_invite_as,
    set_session_cookie,
)
from app.api.people import profile_of
from app.api.web import context
from app.errors import (
    ApiError,
    ForbiddenError,
    InvalidCredentialsError,
    TooManyAttemptsError,
    ValidationFailedError,
)
from app.tracker.accounts import tracked_doc_id
from app.web.auth_pages import MAX_PASSWORD
from app.web.pages import (
    check_form_csrf,
    login_required,
    page_blueprint,
    page_reason,
    render_page,
    see_other,
    viewer,
)

bp = page_blueprint("profile", __name__)

# ?done=<key> after a form: the message shown (only these; the URL never carries text).
DONE = {
    "passkey": "Your passkey was replaced. Download your .torrent files again:"
    " the old ones stop working within a moment.",
    "password": "Your password was changed. Your other login sessions have ended.",
    "invite-revoked": "The invite was revoked; its link no longer works.",
}
UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


@bp.get("/profile")
@login_required
def show() -> Response:
    """Your profile: role, totals, torrents in swarms now, passkey, password and invites.
    Who: any logged-in person, about themselves."""
    return _profile_page(done=DONE.get(request.args.get("done", ""), ""))


@bp.post("/profile/passkey")
@login_required
def rotate_passkey() -> Response:
    """Replace your passkey (as POST /api/profile/passkey); the old one stops working."""
    person = check_form_csrf()
    ctx = context()
    people.issue_passkey(ctx.db, person.name, actor=person.name, now=ctx.clock())
    return see_other(url_for("profile.show", done="passkey") + "#passkey")


@bp.post("/profile/password")
@login_required
def change_password() -> Response:
    """Change your password (as POST /api/password), and stay logged in.

    A new password ends every session opened with the old one, this one too;
    a person who just typed their new password expects to stay logged in, so
    a new session is opened with it. Errors: 400 (fields), 401 (the current
    password is wrong), 429 (too many wrong ones, with Retry-After).
    """
    person = check_form_csrf()
    form = request.form
    current, new = form.get("current_password", ""), form.get("password", "")
    try:
        _check_password_fields(current, new, form.get("password_again", ""))
        change_own_password(person.name, current, new)
    except InvalidCredentialsError:
        wrong = InvalidCredentialsError("Your current password is wrong.")
        return _profile_page(errors={"password": wrong}, status=wrong.status)
    except (ValidationFailedError, TooManyAttemptsError) as error:
        return _profile_page(errors={"password": error}, status=error.status)
    return _reopen_session(person.name, new)


def _check_password_fields(current: str, new: str, again: str) -> None:
    """What is wrong before asking the store: empty, differing or overlong fields (400)."""
    if not current or not new:
        raise ValidationFailedError("Enter your current password and the new one.")
    if new != again:
        raise ValidationFailedError("The two new passwords differ; type the same one twice.")
    if len(new) > MAX_PASSWORD or len(current) > MAX_PASSWORD:
        raise ValidationFailedError(f"A password has at most {MAX_PASSWORD} characters.")


def _reopen_session(name: str, password: str) -> Response:
    """The profile again, in a new session opened with the new password."""
    try:
        secret, _ = open_session(name, password)
    except (InvalidCredentialsError, TooManyAttemptsError):
        # changed, but this login was refused (e.g. the address's limit): log in again
        response = see_other(url_for("auth_pages.login_form", next="/profile"))
        end_session(response)
        return response
    response = see_other(url_for("profile.show", done="password") + "#change-password")
    end_session(response)  # the old session is dead already: drop its record too
    set_session_cookie(response, secret)
    return response


@bp.post("/profile/invites")
@login_required
def create_invite() -> Response:
    """Create an invite (as POST /api/invites) and show its link, this once (201).

    Who: admins (any role), and members an admin allowed to invite (members).
    """
    person = check_form_csrf()
    try:
        role, days = _invite_fields(person)
        secret, doc = create_invite_as(person, role, days)
    except (ValidationFailedError, ForbiddenError) as error:
        return _profile_page(errors={"invites": error}, status=error.status)
    made = {**public_invite(doc), "link": registration_link(secret)}
    return _profile_page(new_invite=made, status=201)


def _invite_fields(person: Principal) -> tuple[str, float]:
    """The form's role (admins choose; others invite members) and days (1 to MAX_DAYS)."""
    role = request.form.get("role", people.MEMBER) if person.role == ADMIN else people.MEMBER
    raw_days = request.form.get("days", "7").strip()
    try:
        days = float(raw_days)
    except ValueError:
        raise ValidationFailedError(f"Days is a number from 1 to {MAX_DAYS}.") from None
    if not 1 <= days <= MAX_DAYS:
        raise ValidationFailedError(f"Days is a number from 1 to {MAX_DAYS}.")
    return role, days


def registration_link(secret: str) -> str:
    """Where the invited person registers: server.public_url, else this request's host."""
    base = context().settings.server.public_url.rstrip("/") or request.host_url.rstrip("/")
    return f"{base}/register?invite={secret}"


@bp.post("/profile/invites/<invite_id>/revoke")
@login_required
def revoke_invite(invite_id: str) -> Response:
    """Revoke one of your open invites (as DELETE /api/invites/<id>); 404 if not yours."""
    person = check_form_csrf()
    try:
        revoke_invite_as(person, invite_id)
    except ApiError as error:
        return _profile_page(errors={"invites": error}, status=error.status)
    return see_other(url_for("profile.show", done="invite-revoked") + "#invites")


def _profile_page(
    *,
    done: str = "",
    errors: dict[str, ApiError] | None = None,
    new_invite: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The profile page; never cached, as it holds the passkey (and maybe an invite's link)."""
    person = viewer()
    assert person is not None, "behind login_required"
    shown = profile_of(person.name)
    html = render_page(
        "profile/show.html",
        title="Your profile",
        profile=shown,
        totals=format_totals(shown),
        swarms=_swarm_names(shown["seeding"] + shown["leeching"]),
        invites=_own_invites(person) if shown["can_invite"] else [],
        invite_roles=INVITE_ROLES if person.role == ADMIN else (people.MEMBER,),
        max_days=MAX_DAYS,
        new_invite=new_invite,
        done=done,
        errors={form: page_reason(e.code, e.reason) for form, e in (errors or {}).items()},
        min_password_length=MIN_PASSWORD_LENGTH,
        password_rule=PASSWORD_RULE,
    )
    response = current_app.response_class(html, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "private, no-store"  # the passkey is on it
    for error in (errors or {}).values():
        if isinstance(error, TooManyAttemptsError):
            response.headers["Retry-After"] = str(error.details.get("retry_after", 60))
    return response


def _own_invites(person: Principal) -> list[dict[str, Any]]:
    """The invites this person made, newest first (admins see everyone's on /admin/people)."""
    docs = invites_visible_to(person)
    return [public_invite(doc) for doc in docs if doc.get("inviter") == person.name]


def _swarm_names(info_hashes: list[str]) -> dict[str, str]:
    """The tracked torrents' names by info hash, in one read (a hash without a name: itself)."""
    found = context().db.get_many(tracked_doc_id(h) for h in info_hashes)
    return {h: (found.get(tracked_doc_id(h)) or {}).get("name") or h for h in info_hashes}


def format_totals(shown: dict[str, Any]) -> dict[str, str]:
    """A person's tracker totals in words: sizes in binary units, the ratio, the snatches."""
    ratio = shown.get("ratio")
    return {
        "uploaded": format_bytes(shown.get("uploaded", 0)),
        "downloaded": format_bytes(shown.get("downloaded", 0)),
        "ratio": f"{ratio:.2f}" if ratio is not None else "none yet",
        "snatches": str(shown.get("snatches", 0)),
    }


def format_bytes(count: int) -> str:
    """1536 -> "1.5 KiB": how much a person uploaded, in the units clients show."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} bytes" if unit == 0 else f"{value:.1f} {UNITS[unit]}"
