"""Identifiers and keys read from torrents: info hashes, site torrent ids, file-path keys."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from metainfo.errors import InfoHashError, TorrentIdError

# Integers that survive JavaScript (Number.MAX_SAFE_INTEGER); the same bound as
# app.ids.MAX_SAFE_INT, which this package may not import (a test checks they agree).
MAX_SAFE_INT = 2**53 - 1
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")


def parse_info_hash(raw: Any) -> str:
    """The info hash as 40 lower-case hex digits; raise InfoHashError otherwise."""
    if not isinstance(raw, str) or not _HEX40.match(raw.strip()):
        raise InfoHashError(
            f"An info hash is 40 hexadecimal digits, got {str(raw)[:60]!r}.", info_hash=raw
        )
    return raw.strip().lower()


def whole_number(text: str) -> int | None:
    """The value of a string of ASCII digits that fits a JavaScript-safe integer, else None.

    str.isdigit alone lets "²" through (int() then raises), and int() refuses
    strings of more than 4,300 digits: both would end as a 500. The API's
    row counts and ids use the same rule (app/api/web.py).
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"  # int() counts leading zeros toward its limit
    if len(digits) > 16:
        return None
    value = int(digits)
    return value if value <= MAX_SAFE_INT else None


def parse_torrent_id(raw: Any, *, field: str = "torrentId") -> int:
    """A site's torrent id: a positive whole number (JSON number or digits)."""
    value = whole_number(raw.strip()) if isinstance(raw, str) else raw
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TorrentIdError(f"{field} must be a positive whole number.", field=field)
    if value > MAX_SAFE_INT:
        raise TorrentIdError(f"{field} is too large.", field=field)
    return value


def normalize_path(path: str) -> str:
    """The matching key of a relative file path: NFC, case-folded, no empty or '.' parts.

    Case-folded because a copy on a case-insensitive file system (or a site
    that changed case) is the same file; sizes keep the match exact.
    """
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())
    return "/".join(part for part in text.split("/") if part not in ("", "."))
