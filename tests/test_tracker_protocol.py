"""Decoding announces and scrapes as real clients send them (BITTORRENT.md), and the replies."""

from urllib.parse import quote_from_bytes

import bencode2
import pytest

from app.tracker import protocol
from app.tracker.protocol import MalformedRequestError

INFO_HASH = bytes.fromhex("2a7e21fe0028ec4e7e694c8f5b63d0a5d9c6bd21")
PEER_ID = b"-LT2110-" + bytes(range(12))


def query(**params):
    return "&".join(f"{k}={v}" for k, v in params.items()).encode()


def base(**overrides):
    params = {
        "info_hash": quote_from_bytes(INFO_HASH),
        "peer_id": quote_from_bytes(PEER_ID),
        "port": "6881",
        "uploaded": "0",
        "downloaded": "0",
        "left": "100",
        "compact": "1",
    }
    params.update(overrides)
    return query(**{k: v for k, v in params.items() if v is not None})


@pytest.mark.parametrize(
    "encoded",
    [
        "".join(f"%{b:02x}" for b in INFO_HASH),  # lower-case hex
        "".join(f"%{b:02X}" for b in INFO_HASH),  # upper-case hex
        quote_from_bytes(INFO_HASH, safe="*~(!"),  # some characters left unescaped
    ],
)
def test_info_hash_is_decoded_as_bytes_whatever_the_escaping(encoded):
    assert protocol.parse_announce(base(info_hash=encoded), None).info_hash == INFO_HASH


def test_unescaped_special_characters_stay_what_they_are():
    raw = b"*~(!" + bytes(16)
    encoded = "*~(!" + quote_from_bytes(bytes(16))
    assert protocol.parse_announce(base(peer_id=encoded), None).peer_id == raw


def test_optional_parameters_may_be_missing():
    """rtorrent sends no numwant, ctorrent no key; event absent is a regular announce."""
    request = protocol.parse_announce(base(uploaded=None, downloaded=None), None)
    assert (request.numwant, request.event, request.uploaded, request.compact) == (
        None,
        b"",
        0,
        True,
    )


def test_passkey_comes_from_the_path_or_the_query():
    assert protocol.parse_announce(base(passkey="abc"), None).passkey == b"abc"
    assert protocol.parse_announce(base(passkey="abc"), b"fromPath").passkey == b"fromPath"


@pytest.mark.parametrize(
    "overrides",
    [
        {"info_hash": None},
        {"info_hash": "short"},
        {"peer_id": None},
        {"port": None},
        {"port": "0"},
        {"port": "70000"},
        {"left": "-5"},
        {"uploaded": "lots"},
        {"event": "exploded"},
    ],
)
def test_malformed_announces_say_what_is_wrong(overrides):
    with pytest.raises(MalformedRequestError, match="malformed request"):
        protocol.parse_announce(base(**overrides), None)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/announce", ("announce", None)),
        (b"/scrape", ("scrape", None)),
        (b"/abcDEF123/announce", ("announce", b"abcDEF123")),
        (b"/abcDEF123/scrape", ("scrape", b"abcDEF123")),
        (b"/abc/def/announce", None),
        (b"/a%20b/announce", None),
        (b"/favicon.ico", None),
    ],
)
def test_routes(path, expected):
    found = protocol.route(path)
    assert (found and (found.action, found.passkey)) == expected


def test_scrape_collects_every_info_hash():
    other = bytes(20)
    q = f"info_hash={quote_from_bytes(INFO_HASH)}&info_hash={quote_from_bytes(other)}&passkey=pk"
    assert protocol.parse_scrape(q.encode(), None) == (b"pk", [INFO_HASH, other])
    with pytest.raises(MalformedRequestError):
        protocol.parse_scrape(b"info_hash=abc", None)


def test_compact_addresses():
    assert protocol.compact_address("127.0.0.2", 6881) == (bytes([127, 0, 0, 2, 0x1A, 0xE1]), False)
    packed, v6 = protocol.compact_address("::1", 6881)
    assert (len(packed), v6, packed[-2:]) == (18, True, b"\x1a\xe1")
    assert protocol.normalize_ip("::ffff:10.0.0.1") == "10.0.0.1"


def test_failure_and_scrape_replies_are_bencoded():
    assert bencode2.bdecode(protocol.failure("unknown passkey")) == {
        b"failure reason": b"unknown passkey"
    }
    assert bencode2.bdecode(protocol.scrape_reply([(INFO_HASH, 2, 1, 5)])) == {
        b"files": {INFO_HASH: {b"complete": 2, b"downloaded": 5, b"incomplete": 1}}
    }
