"""Posting one event to one webhook: the signed request, and only to public addresses.

The body is the event's JSON (app/stream/sse.py event_json), signed with
HMAC-SHA256 of the exact bytes sent, in `X-Distleech-Signature`. Connections
go only to public addresses unless `events.webhook_allow_private`: the
address is checked on the connected socket itself (PublicOnlyAdapter), so a
DNS record that changed since registration cannot point a delivery into the
internal network. A failed attempt's error is the status code and its
standard reason phrase, never the receiver's body. urllib3's own retries are
off: the delivery job (app/stream/delivery.py) alone decides when to try again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import socket
from functools import cache
from http import HTTPStatus
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from app.errors import redact_credentials
from app.store.events import Doc
from app.stream import deadletters
from app.stream.sse import event_json
from app.stream.webhooks import (
    is_public_address,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Distleech-Signature"
USER_AGENT = "distleech-webhooks/1"
MAX_ERROR_LENGTH = 300
MAX_PARALLEL = 8  # webhooks delivered at once (app/stream/delivery.py): one connection each


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: ok (2xx), or the error to record."""

    ok: bool
    error: str = ""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of the exact body, hex, `sha256=` first."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class PrivateAddressError(NewConnectionError):
    """A delivery's connection reached an address that is not public: closed unused."""

    def __init__(self, conn: HTTPConnection, why: str) -> None:
        super().__init__(conn, why)
        self.why = why


def _check_peer(conn: HTTPConnection, sock: socket.socket) -> socket.socket:
    """The connected socket if its peer is public; else close it and refuse.

    Checked after connecting, on the address actually reached, so no DNS
    answer between a check and the connection can slip past it.
    """
    peer = str(sock.getpeername()[0])
    if is_public_address(peer):
        return sock
    sock.close()
    raise PrivateAddressError(conn, f"refused: {conn.host} is {peer}, not a public address")


class _PublicHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _check_peer(self, super()._new_conn())


class _PublicHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _check_peer(self, super()._new_conn())


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    """An adapter whose connections may only reach public addresses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }


@cache
def _session(allow_private: bool) -> requests.Session:
    """One session for every delivery, with urllib3's retries off (the job retries)."""
    session = requests.Session()
    adapter_class = HTTPAdapter if allow_private else PublicOnlyAdapter
    adapter = adapter_class(
        pool_maxsize=MAX_PARALLEL,
        max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def post_event(
    url: str,
    secret: str,
    webhook_id: str,
    event: Doc,
    seq: str,
    attempt: int,
    timeout: float,
    *,
    allow_private: bool = False,
) -> Attempt:
    """POST one event to a receiver; any 2xx is delivered, anything else is not."""
    body = event_json(event).encode("utf-8")
    headers = delivery_headers(secret, webhook_id, event["_id"], body, seq, attempt)
    try:
        response = _session(allow_private).post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as exc:
        return Attempt(False, _describe(exc))
    with response:
        if 200 <= response.status_code < 300:
            return Attempt(True)
        return Attempt(False, status_text(response.status_code))


def delivery_headers(
    secret: str, webhook_id: str, event_id: str, body: bytes, seq: str, attempt: int
) -> dict[str, str]:
    """The headers of one delivery: the signature of the exact body, and ids to dedupe on."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, body),
        "X-Distleech-Event-Id": event_id,
        "X-Distleech-Delivery": deadletters.delivery_id(webhook_id, event_id),
        "X-Distleech-Webhook": webhook_id,
        "X-Distleech-Seq": seq,
        "X-Distleech-Attempt": str(attempt),
    }


def status_text(status: int) -> str:
    """A refusal as `last_error` shows it: the code and its standard phrase.

    Never the receiver's body or its own reason phrase: both are the
    receiver's text, which the API would echo to admins (and could carry
    what an internal service answered).
    """
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _describe(exc: requests.RequestException) -> str:
    """A failed request in a line: our own refusal plainly, else the exception's text."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, PrivateAddressError):
        return _short(reason.why)
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str) -> str:
    return redact_credentials(text)[:MAX_ERROR_LENGTH]
