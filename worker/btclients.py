"""Hand a .torrent to a real BitTorrent client through its RPC: aria2 or Transmission.

The download worker only adds torrents and leaves them: the client
downloads into its download directory, and the ingest scan finds the
finished files later. Both adapters are idempotent: a torrent the client
already has (same info hash) is reported as such, never added twice.

- aria2: its JSON-RPC over plain requests. `aria2p` was considered; it
  would replace about forty lines (aria2.addTorrent, tellStatus, tellActive,
  tellWaiting) while bringing loguru, platformdirs and websocket-client,
  and aria2 answers a duplicate add with a new GID whose download then
  fails, a case aria2p does not handle either.
- Transmission: `transmission-rpc` (maintained, typed). It does the
  X-Transmission-Session-Id 409 dance, basic auth, base64 metainfo and the
  differences between RPC versions, and answers torrent-duplicate with the
  existing torrent.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

CLIENT_KINDS = ("aria2", "transmission")


class BitTorrentClientError(Exception):
    """The client could not be reached, refused our credentials, or refused the torrent."""


@dataclasses.dataclass(frozen=True)
class AddResult:
    """The info hash (lower-case hex) the client holds, and whether this call added it."""

    info_hash: str
    added: bool


class BitTorrentClient(Protocol):
    """What the download worker needs of a client."""

    name: str

    def add_torrent(
        self, data: bytes, info_hash: str, *, download_dir: str | None = None
    ) -> AddResult: ...

    def info_hashes(self) -> set[str]: ...


class Aria2Client:
    """aria2c's JSON-RPC (`aria2c --enable-rpc --rpc-secret=…`), e.g. http://127.0.0.1:6800/jsonrpc."""

    name = "aria2"
    KEYS = ["gid", "infoHash", "status", "errorMessage", "dir"]
    PAGE = 1000

    def __init__(self, rpc_url: str, *, secret: str = "", timeout: float = 30.0) -> None:
        self.rpc_url = rpc_url
        self.secret = secret
        self.timeout = timeout
        self.session = requests.Session()
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; the secret goes first as "token:…", as aria2 wants."""
        args = [f"token:{self.secret}", *params] if self.secret else list(params)
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": args}
        try:
            response = self.session.post(self.rpc_url, json=payload, timeout=self.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise BitTorrentClientError(f"aria2 at {self.rpc_url}: {exc}") from None
        if "error" in body:
            error = body["error"]
            raise BitTorrentClientError(f"aria2 {method}: {error.get('message', error)}")
        return body.get("result")

    def downloads(self) -> list[dict[str, Any]]:
        """Active and waiting downloads (a stopped one is not "there" any more)."""
        found = list(self.call("aria2.tellActive", self.KEYS))
        for offset in itertools.count(0, self.PAGE):
            page = self.call("aria2.tellWaiting", offset, self.PAGE, self.KEYS)
            found += page
            if len(page) < self.PAGE:
                return found
        raise AssertionError("unreachable")

    def info_hashes(self) -> set[str]:
        return {d["infoHash"].lower() for d in self.downloads() if d.get("infoHash")}

    def add_torrent(
        self, data: bytes, info_hash: str, *, download_dir: str | None = None
    ) -> AddResult:
        """aria2.addTorrent, unless aria2 has the torrent already.

        The check comes first because aria2 accepts a duplicate with a fresh
        GID and then fails that download ("InfoHash … is already registered").
        """
        info_hash = info_hash.lower()
        if info_hash in self.info_hashes():
            return AddResult(info_hash, added=False)
        options = {"dir": download_dir} if download_dir else {}
        encoded = base64.b64encode(data).decode("ascii")
        gid = self.call("aria2.addTorrent", encoded, [], options)
        status = self.call("aria2.tellStatus", gid, self.KEYS)
        if status.get("status") == "error":
            raise BitTorrentClientError(f"aria2 refused the torrent: {status.get('errorMessage')}")
        held = str(status.get("infoHash", "")).lower()
        if held != info_hash:
            raise BitTorrentClientError(f"aria2 holds {held!r}, expected {info_hash}")
        return AddResult(info_hash, added=True)


class TransmissionClient:
    """transmission-daemon's RPC, e.g. http://127.0.0.1:9091/transmission/rpc."""

    name = "transmission"

    def __init__(
        self, rpc_url: str, *, username: str = "", password: str = "", timeout: float = 30.0
    ) -> None:
        from transmission_rpc import Client
        from transmission_rpc.error import TransmissionError

        parts = urlsplit(rpc_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BitTorrentClientError(f"not an http(s) RPC URL: {rpc_url!r}")
        try:
            self.client = Client(
                protocol=parts.scheme,  # type: ignore[arg-type]
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else 9091),
                path=parts.path or "/transmission/rpc",
                username=username or None,
                password=password or None,
                timeout=timeout,
            )
        except TransmissionError as exc:
            raise BitTorrentClientError(f"transmission at {rpc_url}: {exc}") from None
        self._error = TransmissionError

    def info_hashes(self) -> set[str]:
        try:
            torrents = self.client.get_torrents(arguments=["id", "hashString"])
        except self._error as exc:
            raise BitTorrentClientError(f"transmission torrent-get: {exc}") from None
        return {t.hash_string.lower() for t in torrents}

    def add_torrent(
        self, data: bytes, info_hash: str, *, download_dir: str | None = None
    ) -> AddResult:
        """torrent-add with base64 metainfo; Transmission itself answers duplicates."""
        info_hash = info_hash.lower()
        known = info_hash in self.info_hashes()
        try:
            torrent = self.client.add_torrent(data, download_dir=download_dir or None)
        except self._error as exc:
            raise BitTorrentClientError(f"transmission torrent-add: {exc}") from None
        held = torrent.hash_string.lower()
        if held != info_hash:
            raise BitTorrentClientError(f"transmission holds {held!r}, expected {info_hash}")
        return AddResult(info_hash, added=not known)


def make_client(
    kind: str, rpc_url: str, *, secret: str = "", username: str = "", password: str = ""
) -> BitTorrentClient:
    """The adapter for `kind` (aria2 or transmission) at rpc_url."""
    if kind == "aria2":
        return Aria2Client(rpc_url, secret=secret)
    if kind == "transmission":
        return TransmissionClient(rpc_url, username=username, password=password)
    raise ValueError(f"unknown client {kind!r}; expected one of {CLIENT_KINDS}")
