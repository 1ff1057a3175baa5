"""Who is calling: admins and users (HTTP basic auth), workers and queuers (tokens).

Passwords are stored as werkzeug hashes (scrypt); tokens are random and
stored only as their SHA-256. Both live in the secrets database
(app/accounts/credentials.py), never in the event log: events record only that a user
was created or a password changed, and a token's aggregate is `token:<random
public id>`, unrelated to the secret, whose projection says whether it was
revoked. A verified credential is cached in memory for
`auth.credential_cache_seconds`, keyed by a hash of the header, so that
scrypt does not run on every request.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache, wraps
from typing import Any, TypeVar

from flask import Request, current_app, request
from werkzeug.security import generate_password_hash

from app.accounts import credentials, sessions
from app.errors import (
    AlreadyExistsError,
    AuthenticationRequiredError,
    ForbiddenError,
    InvalidCredentialsError,
    NotFoundError,
    UserNotFoundError,
    ValidationFailedError,
)
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Doc
from app.timeutil import utcnow

ADMIN, WORKER, QUEUER, ANONYMOUS = "admin", "worker", "queuer", "anonymous"
MEMBER, UPLOADER = "member", "uploader"  # people's roles; each includes the one before
READER = "reader"  # a token that may follow the event stream (GET /api/events) and nothing else
TOKEN_ROLES = (WORKER, QUEUER, READER)
# What a role may also act as (an admin may act as anything: see `requires`).
ROLE_INCLUDES = {UPLOADER: (MEMBER,)}
NAME_PATTERN_HELP = "1-64 characters: letters, digits, '.', '_', '-', '@' (not only dots)"
_CACHE_LIMIT = 4096

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller: a name and the role it acts in."""

    name: str
    role: str
    csrf: str = ""  # set when the caller came with a login session (app/accounts/sessions.py)

    @property
    def holder(self) -> str:
        """How leases and events name this caller."""
        return self.name if self.role != ANONYMOUS else f"anonymous@{self.name}"


def check_name(name: str) -> None:
    """A user's or token's name. Only dots is refused: a URL path resolves `.` and `..`."""
    ok = 0 < len(name) <= 64 and all(c.isalnum() or c in "._-@" for c in name)
    if not ok or not name.strip("."):
        raise ValidationFailedError(f"Invalid name {name!r}: {NAME_PATTERN_HELP}.")


def user_doc_id(name: str) -> str:
    return f"user:{name}"


def token_doc_id(token_id: str) -> str:
    """The aggregate of a token, by its public id (never by the token or its hash)."""
    return f"token:{token_id}"


def apply_user_event(state: Doc, event: Doc) -> None:
    name, data = event["name"], event["data"]
    if name == "created":
        state.update(name=data["name"], admin=data["admin"], state="active")
        if data.get("role"):  # invited users; the others' role follows `admin` (role_of)
            state["role"] = data["role"]
    elif name == "changed":  # role (and admin with it), can_invite: app/accounts/people.py
        state.update(data)
    elif name == "disabled":  # sessions opened before this never work again, even once enabled
        state.update(state="disabled", sessions_after=event["at"])
    elif name == "enabled":
        state["state"] = "active"
    elif name == "removed":  # `password_changed` changes no state: the hash is a secret
        state["state"] = "removed"


def apply_token_event(state: Doc, event: Doc) -> None:
    name, data = event["name"], event["data"]
    if name == "issued":
        state.update(name=data["name"], role=data["role"], state="active", revoked=False)
    elif name == "revoked":
        state.update(state="revoked", revoked=True)


def add_user(
    db: Database, name: str, password: str, *, admin: bool, actor: str, now: datetime
) -> None:
    """Create a user with a hashed password; raise AlreadyExistsError if the name is taken.

    The event comes first: it decides who gets the name, so a second `add`
    can never overwrite the first one's password. A crash before the hash is
    stored leaves a user who cannot log in until `distleech user passwd`.
    """
    check_name(name)
    check_password(password, name)
    password_hash = generate_password_hash(password)
    data = {"name": name, "admin": admin}

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("created", data) if state is None or state.get("state") == "removed" else None

    [outcome] = commit(db, [(user_doc_id(name), decide)], actor=actor, now=now)
    if not outcome.recorded:
        raise AlreadyExistsError(f"User {name!r} exists.", user=name)
    credentials.set_password_hash(db, name, password_hash)


MIN_PASSWORD_LENGTH = 8
PASSWORD_RULE = (
    f"at least {MIN_PASSWORD_LENGTH} characters, at least 5 different ones,"
    " and not containing your name"
)


def check_password(password: str, name: str = "") -> None:
    """The strength rule: long enough, not one character repeated, not the name in it.

    A guess list would reject more, but the login limit (app/accounts/sessions.py)
    already bounds online guessing; this rule stops what people type first.
    """
    weak = len(password) < MIN_PASSWORD_LENGTH or len(set(password)) < 5
    if weak or (name and name.casefold() in password.casefold()):
        raise ValidationFailedError(f"A password needs {PASSWORD_RULE}.", field="password")


def change_password(db: Database, name: str, password: str, *, actor: str, now: datetime) -> None:
    """Replace a user's password; the old hash is compacted away, the log records only the fact.

    The hash is replaced before the event is written, so the log never
    claims a change that did not happen (a crash in between leaves a changed
    password without its event, and the old password never works again).
    """
    check_password(password, name)
    user = db.get_or_none(user_doc_id(name))
    if not user or user.get("state") != "active":
        raise UserNotFoundError(f"No user {name!r}.", user=name)
    credentials.set_password_hash(db, name, generate_password_hash(password))

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("password_changed", {}) if state and state.get("state") == "active" else None

    [outcome] = commit(db, [(user_doc_id(name), decide)], actor=actor, now=now)
    if not outcome.recorded:  # removed meanwhile: its password must not outlive it
        credentials.forget_password(db, name)
        raise UserNotFoundError(f"No user {name!r}.", user=name)


def issue_token(db: Database, name: str, role: str, *, actor: str, now: datetime) -> str:
    """Create a token for a worker or queuer; return it (it is never shown again).

    The secret's link is stored before the token's aggregate exists: a crash
    in between leaves a link to no token, which authenticates nobody.
    """
    check_name(name)
    if role not in TOKEN_ROLES:
        raise ValidationFailedError(f"A token's role is one of {', '.join(TOKEN_ROLES)}.")
    if any(not row["value"]["revoked"] for row in db.view("auth", "tokens_by_name", key=name)):
        raise AlreadyExistsError(f"An active token named {name!r} exists; revoke it first.")
    token, token_id = secrets.token_urlsafe(32), credentials.new_token_id()
    credentials.link_token(db, credentials.token_sha256(token), token_id, name, role)
    data = {"name": name, "role": role}

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("issued", data) if state is None else None  # a taken id is never reused

    [outcome] = commit(db, [(token_doc_id(token_id), decide)], actor=actor, now=now)
    if not outcome.recorded:  # 64 random bits collided: the token must not go out
        raise RuntimeError(f"token id {token_id} is taken; issue the token again")
    return token


def revoke_token(db: Database, name: str, *, actor: str, now: datetime) -> int:
    """Revoke every active token with this name; return how many."""
    ids = [
        row["id"]
        for row in db.view("auth", "tokens_by_name", key=name)
        if not row["value"]["revoked"]
    ]
    if not ids:
        raise NotFoundError(f"No active token named {name!r}.")

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("revoked", {}) if state and not state.get("revoked") else None

    outcomes = commit(db, [(doc_id, decide) for doc_id in ids], actor=actor, now=now)
    return sum(1 for o in outcomes if o.recorded)


def list_tokens(db: Database) -> list[dict[str, Any]]:
    """Every token by name: its public id, role and state (never the token or its hash)."""
    return [
        {
            "name": row["key"],
            "id": row["id"].removeprefix("token:"),
            "role": row["value"]["role"],
            "revoked": row["value"]["revoked"],
        }
        for row in db.view("auth", "tokens_by_name")
    ]


class Authenticator:
    """Turns request headers into a Principal, with a short-lived cache of verified credentials."""

    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float,
        anonymous_workers: bool,
        limiter: sessions.LoginLimiter,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.anonymous_workers = anonymous_workers
        self.clock = clock or utcnow
        self.limiter = limiter  # failed basic-auth logins count like failed session logins
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def identify(self, req: Request) -> Principal | None:
        """Return the caller, None without credentials; raise InvalidCredentialsError if wrong."""
        token = req.headers.get("X-AUTHENTICATION", "").strip()
        authorization = req.headers.get("Authorization", "").strip()
        if not token and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if token:
            return self._cached("t:" + token, lambda: self._verify_token(token))
        if authorization[:6].lower() == "basic ":
            address = req.remote_addr or "unknown"
            return self._cached(
                "b:" + authorization, lambda: self._verify_basic(authorization[6:], address)
            )
        cookie = req.cookies.get(sessions.SESSION_COOKIE)
        if cookie:  # looked up every time: a logout or a removal counts at once
            return self._verify_session(cookie)
        return None

    def _verify_session(self, cookie: str) -> Principal:
        found = sessions.find(self.db, cookie, self.clock())
        if found is None:
            raise InvalidCredentialsError("The login session has ended; log in again.")
        session, user = found
        return Principal(session.user, role_of(user), csrf=session.csrf)

    def _cached(self, credential: str, verify: Callable[[], Principal]) -> Principal:
        key = hashlib.sha256(credential.encode("utf-8")).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > now:
                return hit[1]
        principal = verify()
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, principal)
        return principal

    def _verify_token(self, token: str) -> Principal:
        token_id = credentials.find_token(self.db, credentials.token_sha256(token))
        doc = self.db.get_or_none(token_doc_id(token_id)) if token_id else None
        if not doc or doc.get("revoked"):
            raise InvalidCredentialsError("The token is unknown or revoked.")
        return Principal(doc["name"], doc["role"])

    def _verify_basic(self, encoded: str, address: str) -> Principal:
        try:
            name, _, password = (
                base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidCredentialsError("The basic auth header cannot be decoded.") from None
        sessions.verify_password(
            self.db,
            name,
            password,
            address=address,
            limiter=self.limiter,
            unmatchable=unmatchable_hash(),
        )
        doc = self.db.get(user_doc_id(name))
        return Principal(name, role_of(doc))

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def role_of(user: Doc) -> str:
    """A user's role; users created before roles existed are admins or members."""
    return str(user.get("role") or (ADMIN if user.get("admin") else "member"))


def unmatchable_hash() -> str:
    """What an unknown name's password is checked against (the same scrypt cost)."""
    return _unmatchable_hash()


@cache
def _unmatchable_hash() -> str:
    """A hash of a random password nobody knows, to check against when there is no user."""
    return generate_password_hash(secrets.token_urlsafe(32))


def may_act_as(role: str, roles: tuple[str, ...]) -> bool:
    """Whether a caller in `role` may call what `roles` may: admins always, an
    uploader where members may, anonymous workers where they were let in."""
    if role in (ADMIN, ANONYMOUS) or role in roles:
        return True
    return any(included in roles for included in ROLE_INCLUDES.get(role, ()))


def current_principal() -> Principal:
    """The caller of the current request, set by `requires`."""
    principal = request.environ.get("distleech.principal")
    if not isinstance(principal, Principal):
        raise AuthenticationRequiredError("This endpoint needs credentials.")
    return principal


def requires(*roles: str) -> Callable[[F], F]:
    """Let only callers in one of `roles` (admins always) reach the view.

    No credential: 401 authentication_required (unless the endpoint is a worker
    endpoint and `auth.anonymous_workers` is on); a wrong one: 401
    invalid_credentials; the wrong role: 403 forbidden.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            authenticator: Authenticator = current_app.extensions["distleech"].auth
            principal = authenticator.identify(request)
            if principal is None and WORKER in roles and authenticator.anonymous_workers:
                principal = Principal(request.remote_addr or "unknown", ANONYMOUS)
            if principal is None:
                raise AuthenticationRequiredError(
                    "This endpoint needs credentials: " + " or ".join(roles) + "."
                )
            if not may_act_as(principal.role, roles):
                raise ForbiddenError(f"A {principal.role} may not call this endpoint.")
            # With a login session every change needs its CSRF token, and so does any
            # worker or queuer endpoint: two of them lease work on a GET.
            changes = request.method not in ("GET", "HEAD", "OPTIONS")
            if principal.csrf and (changes or WORKER in roles or QUEUER in roles):
                sent = request.headers.get(sessions.CSRF_HEADER) or request.form.get(
                    sessions.CSRF_FIELD
                )
                sessions.check_csrf(principal.csrf, sent)
            request.environ["distleech.principal"] = principal
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
