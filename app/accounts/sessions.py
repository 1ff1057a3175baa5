"""Browser sessions: log in once, then a cookie; every change made with it carries a CSRF token.

A login (`POST /api/session`) checks the name and password like basic auth
does, then sets the cookie `distleech_session` (HttpOnly, SameSite=Lax,
Secure when the request came over HTTPS) holding a random secret. Only the
secret's SHA-256 is stored, in the secrets database, with the user, an
expiry (`auth.session_hours`) and the session's CSRF token. A request that
changes anything with the cookie must send that token (header
`X-CSRF-Token`, or form field `csrf_token`), so another site's page cannot
act with a member's session. Logging out deletes the stored session at
once; a changed password (and a removed user) ends every older session at
its next request: a session remembers a fingerprint of the password hash it
was opened with.

Failed logins are limited per account and per client address within
`auth.login_window_minutes` (429 `too_many_attempts`, with Retry-After):
counted in each app process's memory, which bounds guessing without a
write per attempt. Unknown names cost the same scrypt check as wrong
passwords, so the answer's time does not tell which names exist.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from werkzeug.security import check_password_hash

from app.accounts import credentials
from app.config import AuthSettings
from app.errors import CsrfFailedError, InvalidCredentialsError, TooManyAttemptsError
from app.store.couch import Database
from app.timeutil import iso

SESSION_COOKIE = "distleech_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclasses.dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires_at: str
    password: str  # the fingerprint of the password it was opened with
    opened_at: str = ""  # a person disabled after this ends it (their `sessions_after`)


class LoginLimiter:
    """Failed logins per account and per address in a sliding window (this process).

    An attempt counts as failed from the moment it starts and is taken back
    when the password matches, so attempts running at the same time cannot
    get past the limit together. Keys with nothing in the window are dropped.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.window = settings.login_window_minutes * 60
        self.limits = {
            "account": settings.login_failures_per_account,
            "address": settings.login_failures_per_address,
        }
        self._failures: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()

    def start(self, name: str, address: str) -> float:
        """Refuse (TooManyAttemptsError) while the account or the address is over the
        limit; else count this attempt as failed until `succeeded` says otherwise."""
        now = time.monotonic()
        keys = (("account", name.lower()), ("address", address))
        with self._lock:
            for kind, who in keys:
                failures = self._recent((kind, who), now)
                if len(failures) >= self.limits[kind]:
                    wait = int(failures[0] + self.window - now) + 1
                    raise TooManyAttemptsError(
                        f"Too many failed logins for this {kind}; try again in {wait} s.",
                        retry_after=wait,
                    )
            for pair in keys:
                self._failures.setdefault(pair, collections.deque()).append(now)
        return now

    def succeeded(self, name: str, address: str, started: float) -> None:
        with self._lock:
            for key in (("account", name.lower()), ("address", address)):
                failures = self._failures.get(key)
                if failures and started in failures:
                    failures.remove(started)
                if failures is not None and not failures:
                    del self._failures[key]

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return collections.deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures


def login(
    db: Database,
    name: str,
    password: str,
    *,
    address: str,
    limiter: LoginLimiter,
    hours: float,
    now: datetime,
    unmatchable_hash: str,
) -> tuple[str, Session]:
    """Check the name and password; return (the cookie's secret, the session)."""
    opened_with = verify_password(
        db, name, password, address=address, limiter=limiter, unmatchable=unmatchable_hash
    )
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session = Session(name, csrf, iso(now + timedelta(hours=hours)), opened_with, iso(now))
    credentials.put_session(db, credentials.token_sha256(secret), dataclasses.asdict(session))
    return secret, session


def verify_password(
    db: Database, name: str, password: str, *, address: str, limiter: LoginLimiter, unmatchable: str
) -> str:
    """Raise InvalidCredentialsError unless this active user has this password (limited);
    return the stored hash's fingerprint, which a session keeps."""
    started = limiter.start(name, address)
    doc = db.get_or_none(f"user:{name}") if name else None
    active = doc is not None and doc.get("state") == "active"
    stored = credentials.get_password_hash(db, name) if active else None
    # scrypt runs for unknown names too, so timing does not tell which names exist
    if not check_password_hash(stored or unmatchable, password) or stored is None:
        raise InvalidCredentialsError("Wrong user name or password.")
    limiter.succeeded(name, address, started)
    return fingerprint(stored)


def fingerprint(password_hash: str) -> str:
    """Which password a session was opened with: a new password ends older sessions."""
    return credentials.token_sha256(password_hash)[:16]


def find(db: Database, secret: str, now: datetime) -> tuple[Session, dict[str, Any]] | None:
    """The live session of this cookie and its user's projection (None: unknown,
    expired, its user removed or disabled since it opened, or the password changed)."""
    doc = credentials.find_session(db, credentials.token_sha256(secret))
    if doc is None or doc["expires_at"] <= iso(now):
        return None
    user = db.get_or_none(f"user:{doc['user']}")
    if not user or user.get("state") != "active":
        return None
    if user.get("sessions_after") and doc.get("opened_at", "") <= user["sessions_after"]:
        return None  # opened before the person was disabled (and enabled again since)
    stored = credentials.get_password_hash(db, doc["user"])
    if stored is None or fingerprint(stored) != doc.get("password"):
        return None  # the password changed (or the name belongs to a new account) since
    fields = ("user", "csrf", "expires_at", "password", "opened_at")
    return Session(*(doc.get(field, "") for field in fields)), user


def logout(db: Database, secret: str) -> None:
    credentials.drop_session(db, credentials.token_sha256(secret))


def check_csrf(expected: str, sent: Any) -> None:
    """Refuse a change made with a session unless it carries the session's CSRF token."""
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailedError(
            f"A change made with a login session must send its CSRF token ({CSRF_HEADER} "
            f"header or {CSRF_FIELD} form field; GET /api/session tells it)."
        )
