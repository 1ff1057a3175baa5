"""Keys of the torrent registry: document ids, states, info hashes, site refs, search tokens."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from app.errors import InvalidInfoHashError, InvalidSiteError, InvalidTorrentIdError
from app.ids import normalize_key
from app.queues import downloads
from metainfo import names
from metainfo.errors import InfoHashError, TorrentIdError

REGISTERED, LOCATED, UNAVAILABLE = "registered", "located", "unavailable"
FROM_TORRENT, FROM_GAZELLE = "torrent", "gazelle"
MAX_TOKENS = 64
MAX_TOKEN_CHARS = 40
_TOKEN = re.compile(r"[^\W_]+")


def torrent_doc_id(info_hash: str) -> str:
    return f"torrent:{info_hash}"


def torrent_file_doc_id(info_hash: str) -> str:
    return f"torrentfile:{info_hash}"


def check_info_hash(raw: Any) -> str:
    """The info hash as 40 lower-case hex digits; raise InvalidInfoHashError otherwise."""
    try:
        return names.parse_info_hash(raw)
    except InfoHashError as exc:
        raise InvalidInfoHashError(str(exc), info_hash=raw) from None


def parse_torrent_id(raw: Any, *, field: str = "torrentId") -> int:
    """A site's torrent id: a positive whole number (JSON number or digits)."""
    try:
        return names.parse_torrent_id(raw, field=field)
    except TorrentIdError as exc:
        raise InvalidTorrentIdError(str(exc), field=exc.field) from None


def parse_site(raw: Any) -> str:
    """The hostname of a site given as a URL or a host; raise InvalidSiteError otherwise."""
    host = downloads.site_host(raw) if isinstance(raw, str) else None
    if host is None:
        raise InvalidSiteError("site must be the site's URL or hostname.", field="site")
    return host


def normalize_dir(name: str) -> str:
    """The matching key of a top directory (or a single file's name): see ids.normalize_key."""
    return normalize_key(name.strip("/"))


def title_tokens(*texts: str | None) -> list[str]:
    """Search tokens: case-folded, accents stripped (Björk -> bjork), split on non-letters."""
    tokens: set[str] = set()
    for text in texts:
        if not text:
            continue
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
        tokens.update(t[:MAX_TOKEN_CHARS] for t in _TOKEN.findall(plain))
    return sorted(tokens)[:MAX_TOKENS]
