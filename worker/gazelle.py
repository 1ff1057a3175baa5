"""A client for a Gazelle site's JSON API (ajax.php) and its .torrent downloads.

Gazelle allows 5 API requests per 10 seconds per user and bans accounts that
keep exceeding it, so every request to the site goes through one RateLimiter
per site and process (`shared_limiter`), shared by every client and thread
that talks to that site. Downloads count too: the documented limit names
browse, artist and torrentgroup, but forks differ in what else they count,
and a worker that spends one request of budget per .torrent loses little.

Credentials come from the environment only (see `SiteCredentials.from_env`):
an API token for newer forks (sent as the Authorization header), a session
cookie for classic Gazelle, and the authkey / torrent_pass of classic
download URLs (looked up with `action=index` when only a login is given).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import requests

log = logging.getLogger(__name__)

DEFAULT_RATE_REQUESTS = 5
DEFAULT_RATE_WINDOW = 10.0
USER_AGENT = "distleech-refworker/0.1"
DOWNLOAD_STYLES = ("auto", "classic", "ajax")


class GazelleError(Exception):
    """The site could not answer what was asked; the message says why."""


class GazelleFailureError(GazelleError):
    """The site answered {"status": "failure", "error": …} (bad id, no such artist, …)."""

    def __init__(self, action: str, error: str) -> None:
        super().__init__(f"{action}: {error}")
        self.action, self.error = action, error


class GazelleAuthError(GazelleError):
    """The site refused our credentials or answered a login page instead of JSON."""


class GazelleRateLimitedError(GazelleError):
    """The site still said we were too fast after waiting out whole windows."""


class RateLimiter:
    """At most `requests` requests to a site within any `window` seconds, across threads.

    A request's slot is stamped when its response has arrived, not when it
    was sent: the site counts requests when they reach it, which is somewhere
    between our send and our receive, so waiting `window` from the previous
    requests' *ends* keeps every window the site sees within the limit even
    when latency varies. Requests still in flight hold a slot too.
    """

    def __init__(
        self, requests: int = DEFAULT_RATE_REQUESTS, window: float = DEFAULT_RATE_WINDOW
    ) -> None:
        if requests < 1 or window <= 0:
            raise ValueError("a rate limit needs at least 1 request per positive window")
        self.requests, self.window = requests, window
        self._finished: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a free slot, hold it during the request, stamp its end."""
        self._acquire()
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._finished.append(time.monotonic())
                self._cond.notify_all()

    def _acquire(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._finished and self._finished[0] + self.window <= now:
                    self._finished.popleft()
                if len(self._finished) + self._in_flight < self.requests:
                    self._in_flight += 1
                    return
                # Wake when the oldest stamp leaves the window, or when a request ends.
                timeout = self._finished[0] + self.window - now if self._finished else None
                self._cond.wait(timeout)


_LIMITERS: dict[tuple[str, int, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(
    site: str, requests: int = DEFAULT_RATE_REQUESTS, window: float = DEFAULT_RATE_WINDOW
) -> RateLimiter:
    """The one limiter of this process for a site (by host), so that all clients share it."""
    key = (urlsplit(site_base_url(site)).netloc.lower(), requests, window)
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(key, RateLimiter(requests, window))


def site_base_url(site: str) -> str:
    """The site's base URL with a trailing slash ("https://x.example" -> "https://x.example/")."""
    text = site.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if not parts.hostname:
        raise ValueError(f"not a site URL: {site!r}")
    path = parts.path if parts.path.endswith("/") else parts.path.rsplit("/", 1)[0] + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclasses.dataclass(frozen=True)
class SiteCredentials:
    """What the site needs to know who we are; never logged, never stored."""

    api_key: str = ""  # sent verbatim as Authorization (OPS wants "token <key>", RED the key)
    session: str = ""  # classic Gazelle's `session` cookie
    authkey: str = ""  # classic download URLs
    torrent_pass: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SiteCredentials:
        """Read DISTLEECH_SITE_API_KEY, _SESSION, _AUTHKEY and _TORRENT_PASS."""
        env = os.environ if environ is None else environ
        return cls(
            api_key=env.get("DISTLEECH_SITE_API_KEY", ""),
            session=env.get("DISTLEECH_SITE_SESSION", ""),
            authkey=env.get("DISTLEECH_SITE_AUTHKEY", ""),
            torrent_pass=env.get("DISTLEECH_SITE_TORRENT_PASS", ""),
        )


class GazelleClient:
    """ajax.php actions and .torrent downloads of one site, all through its rate limiter."""

    def __init__(
        self,
        site: str,
        credentials: SiteCredentials,
        *,
        limiter: RateLimiter | None = None,
        download_style: str = "auto",
        timeout: float = 30.0,
        rate_limit_retries: int = 2,
    ) -> None:
        if download_style not in DOWNLOAD_STYLES:
            raise ValueError(f"download_style must be one of {DOWNLOAD_STYLES}")
        self.base_url = site_base_url(site)
        self.credentials = credentials
        self.limiter = limiter or shared_limiter(self.base_url)
        self.download_style = download_style
        self.timeout = timeout
        self.rate_limit_retries = rate_limit_retries
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if credentials.api_key:
            self.session.headers["Authorization"] = credentials.api_key
        if credentials.session:
            host = urlsplit(self.base_url).hostname or ""
            self.session.cookies.set("session", credentials.session, domain=host)
        self._download_keys: tuple[str, str] | None = None

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------ JSON API

    def ajax(self, action: str, **params: Any) -> Any:
        """Call ajax.php?action=…; return `response`, raise GazelleFailureError on failure."""
        response = self._get("ajax.php", {"action": action, **params})
        body = _json_or_none(response)
        if body is None:
            raise GazelleAuthError(
                f"{action}: the site answered HTTP {response.status_code} without JSON "
                "(not logged in? check DISTLEECH_SITE_API_KEY or DISTLEECH_SITE_SESSION)"
            )
        if response.status_code in (401, 403):
            raise GazelleAuthError(f"{action}: refused ({body.get('error', response.status_code)})")
        if body.get("status") != "success":
            raise GazelleFailureError(action, str(body.get("error") or "failure"))
        return body.get("response")

    def browse(self, searchstr: str, **filters: Any) -> dict[str, Any]:
        return dict(self.ajax("browse", searchstr=searchstr, **filters))

    def artist(self, name: str) -> dict[str, Any]:
        return dict(self.ajax("artist", artistname=name))

    def torrent(self, torrent_id: int) -> dict[str, Any]:
        """The `action=torrent` response object: {"group": …, "torrent": …}."""
        return dict(self.ajax("torrent", id=torrent_id))

    def torrentgroup(self, group_id: int) -> dict[str, Any]:
        return dict(self.ajax("torrentgroup", id=group_id))

    # ------------------------------------------------------------ .torrent files

    def download_url(self, torrent_id: int) -> tuple[str, dict[str, Any]]:
        """The URL and query of a .torrent: newer forks' ajax download, or the classic one.

        `auto` uses ajax.php?action=download when an API token is set (it is
        what those tokens are for), else torrents.php?action=download with
        authkey and torrent_pass (from the environment, or from action=index).
        """
        style = self.download_style
        if style == "auto":
            style = "ajax" if self.credentials.api_key else "classic"
        if style == "ajax":
            return "ajax.php", {"action": "download", "id": torrent_id}
        authkey, torrent_pass = self._classic_keys()
        query = {"action": "download", "id": torrent_id, "authkey": authkey}
        query["torrent_pass"] = torrent_pass
        return "torrents.php", query

    def download_torrent(self, torrent_id: int) -> bytes:
        """Fetch the .torrent of a torrent id; raise GazelleError unless it looks like one."""
        path, query = self.download_url(torrent_id)
        response = self._get(path, query)
        data = response.content
        if response.status_code == 200 and data.startswith(b"d"):  # a bencoded dictionary
            return data
        if response.status_code in (401, 403):
            raise GazelleAuthError(f"download of {torrent_id}: refused (check the credentials)")
        body = _json_or_none(response)
        if body is not None and body.get("status") == "failure":
            raise GazelleFailureError("download", str(body.get("error") or "failure"))
        if response.status_code == 404:  # classic Gazelle's HTML error page for a deleted torrent
            raise GazelleFailureError("download", "HTTP 404: no such torrent?")
        raise GazelleError(
            f"download of {torrent_id}: HTTP {response.status_code}, "
            f"{response.headers.get('Content-Type', 'no content type')}, not a .torrent"
        )

    def _classic_keys(self) -> tuple[str, str]:
        creds = self.credentials
        if creds.authkey and creds.torrent_pass:
            return creds.authkey, creds.torrent_pass
        if self._download_keys is None:
            if not (creds.session or creds.api_key):
                raise GazelleAuthError(
                    "classic downloads need DISTLEECH_SITE_AUTHKEY and "
                    "DISTLEECH_SITE_TORRENT_PASS, or a login to look them up"
                )
            index = self.ajax("index")  # {"authkey", "passkey", …} of the logged-in user
            self._download_keys = (
                creds.authkey or str(index["authkey"]),
                creds.torrent_pass or str(index["passkey"]),
            )
        return self._download_keys

    # ------------------------------------------------------------ transport

    def _get(self, path: str, query: Mapping[str, Any]) -> requests.Response:
        """GET through the limiter; when the site still says "too fast", wait a window."""
        url = urljoin(self.base_url, path)
        for attempt in range(self.rate_limit_retries + 1):
            with self.limiter.slot():
                try:
                    response = self.session.get(url, params=query, timeout=self.timeout)
                except requests.RequestException as exc:
                    raise GazelleError(f"{path}: {self._redact(str(exc))}") from None
            if not _is_rate_limited(response):
                return response
            log.warning("site says rate limit exceeded; waiting %.1f s", self.limiter.window)
            if attempt < self.rate_limit_retries:
                time.sleep(self.limiter.window)
        raise GazelleRateLimitedError(f"{path}: still rate limited after waiting")

    def _redact(self, text: str) -> str:
        """Hide credentials in a message: requests' errors quote the URL, query included."""
        creds = self.credentials
        secrets = (creds.api_key, creds.session, creds.authkey, creds.torrent_pass)
        for secret in (*secrets, *(self._download_keys or ())):
            for form in {secret, quote(secret, safe=""), quote_plus(secret)} if secret else ():
                text = text.replace(form, "***")
        return text


def _json_or_none(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _is_rate_limited(response: requests.Response) -> bool:
    """429, or a failure envelope that says so (some forks answer 200 or 400)."""
    if response.status_code == 429:
        return True
    if response.content.lstrip()[:1] != b"{":  # not JSON (a .torrent starts with "d")
        return False
    body = _json_or_none(response)
    return bool(body and "rate limit" in str(body.get("error", "")).lower())
