"""The workers' side of the distleech HTTP API: lease, submit, upload, cache.

Workers talk to the coordinator over HTTP only (never to CouchDB), so a
worker needs nothing but the server's URL and a worker token
(DISTLEECH_TOKEN), and runs anywhere the server is reachable.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

log = logging.getLogger(__name__)

MISSING = object()  # a cache miss, distinct from a cached None ("the site has no such thing")


class CoordinatorError(Exception):
    """The coordinator refused or failed a request; carries its status and error code."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status, self.error, self.reason = status, error, reason

    @property
    def transient(self) -> bool:
        """Unreachable or a server-side failure: worth trying again later."""
        return self.status == 0 or self.status >= 500


class Coordinator:
    """One distleech server, called with a worker token in X-AUTHENTICATION."""

    def __init__(
        self, url: str, token: str, *, timeout: float = 60.0, busy_retries: int = 3
    ) -> None:
        self.base_url = url.rstrip("/") + "/"
        self.timeout = timeout
        self.busy_retries = busy_retries
        self.session = requests.Session()
        self.session.headers.update({"X-AUTHENTICATION": token, "Accept": "application/json"})
        self.cache_enabled = True

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and return its JSON; raise CoordinatorError on an error status.

        A 503 (`try_again`, `database_unavailable`) means nothing was changed,
        so it is retried after the server's Retry-After.
        """
        for attempt in range(self.busy_retries + 1):
            try:
                response = self.session.request(
                    method, urljoin(self.base_url, path), timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                raise CoordinatorError(0, "unreachable", str(exc)) from None
            if response.status_code == 503 and attempt < self.busy_retries:
                time.sleep(_retry_after(response))
                continue
            break
        try:
            body = response.json()
        except ValueError:
            body = {"error": "http_error", "reason": response.text[:200]}
        if response.status_code >= 400:
            error = body if isinstance(body, dict) else {}
            raise CoordinatorError(
                response.status_code,
                str(error.get("error", "http_error")),
                str(error.get("reason", "")),
            )
        return body

    # ------------------------------------------------------------ metadata queue

    def lease_albums(self, rows: int) -> list[dict[str, Any]]:
        """GET /metadata/<rows>: [{"album", "id", "sortArtist"}]."""
        return list(self.request("GET", f"metadata/{rows}")["albums"])

    def submit_metadata(self, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """POST /metadata/submit: {"<album id>": [{"site", "torrentId"}] or []}."""
        return dict(self.request("POST", "metadata/submit", json=results))

    # ------------------------------------------------------------ download queue

    def lease_downloads(self, site: str, rows: int) -> list[dict[str, Any]]:
        """POST /torrents: [{"id", "siteTorrentId"}] of that site."""
        body = self.request("POST", "torrents", data={"site": site, "rows": str(rows)})
        return list(body["torrents"])

    # ------------------------------------------------------------ torrent registry

    def upload_gazelle(self, site: str, gazelle: dict[str, Any]) -> dict[str, Any]:
        """POST /api/torrents JSON: what the site's action=torrent said about one torrent."""
        return dict(self.request("POST", "api/torrents", json={"site": site, "gazelle": gazelle}))

    def upload_torrent_file(self, site: str, torrent_id: int, data: bytes) -> dict[str, Any]:
        """POST /api/torrents multipart: the .torrent file itself."""
        files = {"torrent": (f"{torrent_id}.torrent", data, "application/x-bittorrent")}
        form = {"site": site, "torrentId": str(torrent_id)}
        return dict(self.request("POST", "api/torrents", data=form, files=files))

    def mark_unavailable(self, site: str, torrent_id: int, reason: str) -> dict[str, Any]:
        """POST /api/torrents/by-site/<host>/<id>/unavailable: the task is never leased again."""
        host = urlsplit(site).hostname if "://" in site else site
        path = f"api/torrents/by-site/{quote(host or site, safe='')}/{torrent_id}/unavailable"
        return dict(self.request("POST", path, json={"reason": reason}))

    # ------------------------------------------------------------ cache (app/api/cache.py)

    def get_cached(self, kind: str, site: str, key: str) -> Any:
        """The cached value, or MISSING. A server without the cache endpoint turns caching off."""
        if not self.cache_enabled:
            return MISSING
        try:
            body = self.request(
                "GET", f"api/cache/{quote(kind)}", params={"site": site, "key": key}
            )
        except CoordinatorError as exc:
            if exc.error != "cache_miss":
                self._disable_cache(exc)
            return MISSING
        return body.get("value")

    def put_cached(self, kind: str, site: str, key: str, value: Any, ttl_seconds: float) -> None:
        """Store a value for ttl_seconds; a failure only costs a later site request."""
        if not self.cache_enabled:
            return
        body = {"site": site, "key": key, "value": value, "ttlSeconds": ttl_seconds}
        try:
            self.request("PUT", f"api/cache/{quote(kind)}", json=body)
        except CoordinatorError as exc:
            self._disable_cache(exc)

    def _disable_cache(self, exc: CoordinatorError) -> None:
        if exc.status in (404, 405) and exc.error in ("not_found", "method_not_allowed"):
            log.warning("the server has no cache endpoint; continuing without a cache")
            self.cache_enabled = False
        else:
            log.warning("cache request failed: %s", exc)


def _retry_after(response: requests.Response) -> float:
    """Retry-After in seconds (1 when absent or an HTTP date), at most a minute."""
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.0), 60.0)
    except ValueError:
        return 1.0
