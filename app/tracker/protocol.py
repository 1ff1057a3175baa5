"""The HTTP tracker protocol: parse announce/scrape queries, bencode replies.

Pure functions over bytes, so the hot path is easy to test and to measure.
`info_hash` and `peer_id` are raw 20-byte strings percent-encoded in the query,
in any hex case and with some characters left unescaped (`*`, `~`, `(`, `!`):
they are decoded from the raw query string as bytes, never as text.

Specs: BEP 3 (announce), BEP 7 (`peers6`), BEP 23 (compact peers),
BEP 48 (scrape).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

import bencode2

EVENTS = frozenset({b"started", b"completed", b"stopped", b"paused", b""})
# A passkey in a path (`/<passkey>/announce`) or query; the API allows 16–64 of these.
PASSKEY_RE = re.compile(rb"^[A-Za-z0-9]{1,128}$")
MAX_INT = 2**63 - 1


class MalformedRequestError(Exception):
    """The request cannot be understood; its text is the failure reason clients show."""


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Which tracker action a path names, and the passkey found in the path, if any."""

    action: str  # "announce" or "scrape"
    passkey: bytes | None


@dataclasses.dataclass(slots=True)
class Announce:
    """One announce, decoded; ip and port are where peers should connect."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: bytes
    compact: bool
    no_peer_id: bool
    numwant: int | None
    passkey: bytes | None


def parse_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (path, raw query)."""
    path, _, query = target.partition(b"?")
    return path, query


def route(path: bytes) -> Route | None:
    """`/announce`, `/scrape`, `/<passkey>/announce`, `/<passkey>/scrape`; None otherwise."""
    parts = path.strip(b"/").split(b"/")
    if len(parts) == 1 and parts[0] in (b"announce", b"scrape"):
        return Route(parts[0].decode(), None)
    if len(parts) == 2 and parts[1] in (b"announce", b"scrape") and PASSKEY_RE.match(parts[0]):
        return Route(parts[1].decode(), parts[0])
    return None


def parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """Raw query string → {name: [values as bytes]}.

    `+` stays a `+`: clients escape it when they mean the byte, and turning it
    into a space (form encoding) would corrupt the odd unescaped hash byte.
    """
    params: dict[bytes, list[bytes]] = {}
    for pair in query.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        if b"%" in name:
            name = unquote_to_bytes(name)
        # most values (port, left, passkey…) carry no escapes: skip the decoder for them
        params.setdefault(name, []).append(unquote_to_bytes(value) if b"%" in value else value)
    return params


def _one(params: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = params.get(name)
    return values[0] if values else None


def _hash20(params: dict[bytes, list[bytes]], name: bytes) -> bytes:
    value = _one(params, name)
    if value is None:
        raise MalformedRequestError(f"malformed request: {name.decode()} is missing")
    if len(value) != 20:
        raise MalformedRequestError(
            f"malformed request: {name.decode()} must be 20 bytes, got {len(value)}"
        )
    return value


def _integer(
    params: dict[bytes, list[bytes]], name: bytes, default: int | None, high: int = MAX_INT
) -> int | None:
    value = _one(params, name)
    if value is None or value == b"":
        return default
    try:
        number = int(value)
    except ValueError:
        raise MalformedRequestError(
            f"malformed request: {name.decode()} must be a whole number"
        ) from None
    if not 0 <= number <= high:
        raise MalformedRequestError(f"malformed request: {name.decode()} is out of range")
    return number


def parse_announce(query: bytes, path_passkey: bytes | None) -> Announce:
    """Decode an announce query; raise MalformedRequestError with a reason a user can act on.

    A missing `numwant`, `key`, `uploaded`, `downloaded` or `event` is normal
    (rtorrent, ctorrent); a missing `left` counts as a leecher with unknown
    progress. `ip` is ignored on purpose: a private tracker hands out the address
    the request came from, so nobody can point a swarm at a third party.
    """
    params = parse_query(query)
    event = _one(params, b"event") or b""
    if event not in EVENTS:
        raise MalformedRequestError(f"malformed request: unknown event {event[:20]!r}")
    port = _integer(params, b"port", 0, 65535)
    if not port:
        raise MalformedRequestError("malformed request: port must be 1-65535")
    return Announce(
        info_hash=_hash20(params, b"info_hash"),
        peer_id=_hash20(params, b"peer_id"),
        port=port,
        uploaded=_integer(params, b"uploaded", 0) or 0,
        downloaded=_integer(params, b"downloaded", 0) or 0,
        left=_integer(params, b"left", 1) or 0,
        event=event,
        compact=_one(params, b"compact") != b"0",
        no_peer_id=_one(params, b"no_peer_id") == b"1",
        numwant=_integer(params, b"numwant", None),
        passkey=path_passkey or _one(params, b"passkey"),
    )


def parse_scrape(query: bytes, path_passkey: bytes | None) -> tuple[bytes | None, list[bytes]]:
    """(passkey, info hashes asked for); an empty list asks for every torrent (BEP 48)."""
    params = parse_query(query)
    hashes = params.get(b"info_hash", [])
    for value in hashes:
        if len(value) != 20:
            raise MalformedRequestError("malformed request: info_hash must be 20 bytes")
    return path_passkey or _one(params, b"passkey"), hashes


def compact_address(ip: str, port: int) -> tuple[bytes, bool]:
    """The BEP 23/BEP 7 compact form of an address: (bytes, is IPv6)."""
    address = ipaddress.ip_address(ip)
    return address.packed + port.to_bytes(2, "big"), address.version == 6


def normalize_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is the IPv4 address it maps."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def failure(reason: str) -> bytes:
    """A bencoded failure reply: every client shows the reason to its user."""
    return bencode2.bencode({b"failure reason": reason.encode()})


def announce_reply(
    *,
    interval: int,
    min_interval: int,
    complete: int,
    incomplete: int,
    peers4: bytes | list[dict[bytes, object]],
    peers6: bytes,
) -> bytes:
    """The BEP 3 reply; `peers6` only when there are IPv6 peers to give (BEP 7)."""
    reply: dict[bytes, object] = {
        b"interval": interval,
        b"min interval": min_interval,
        b"complete": complete,
        b"incomplete": incomplete,
        b"peers": peers4,
    }
    if peers6:
        reply[b"peers6"] = peers6
    return bencode2.bencode(reply)


def scrape_reply(files: Iterable[tuple[bytes, int, int, int]]) -> bytes:
    """BEP 48: {files: {info_hash: {complete, downloaded, incomplete}}}."""
    return bencode2.bencode(
        {
            b"files": {
                info_hash: {b"complete": seeders, b"downloaded": snatches, b"incomplete": leechers}
                for info_hash, seeders, leechers, snatches in files
            }
        }
    )
