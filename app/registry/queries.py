"""Reads of the torrent registry: a torrent, by site, as the API shows it, reseed, search."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from app.errors import InvalidQueryError, TorrentFileNotFoundError, TorrentNotFoundError
from app.queues.downloads import TorrentRef
from app.registry.keys import title_tokens, torrent_doc_id, torrent_file_doc_id
from app.store.couch import Database
from app.store.events import Doc


def read_torrent_file(db: Database, info_hash: str) -> bytes:
    """The stored .torrent of a torrent; raise TorrentFileNotFoundError when none is."""
    doc = db.get_or_none(torrent_file_doc_id(info_hash))
    if doc is None:
        raise TorrentFileNotFoundError(
            f"No .torrent file is stored for {info_hash}.", info_hash=info_hash
        )
    try:
        return base64.b64decode(doc["data"], validate=True)
    except (KeyError, binascii.Error):
        raise TorrentFileNotFoundError(f"The stored .torrent of {info_hash} is damaged.") from None


def get_torrent(db: Database, info_hash: str) -> Doc:
    doc = db.get_or_none(torrent_doc_id(info_hash))
    if doc is None:
        raise TorrentNotFoundError(f"No torrent has info hash {info_hash}.", info_hash=info_hash)
    return doc


def find_by_site(db: Database, ref: TorrentRef) -> Doc | None:
    """The torrent registered for a site's torrent id, or None."""
    rows = db.view("torrents", "by_site_torrent", key=[ref.host, ref.torrent_id], include_docs=True)
    docs = [row["doc"] for row in rows if row.get("doc")]
    return docs[0] if docs else None


def public_torrent(doc: Doc) -> dict[str, Any]:
    """A torrent as the API shows it (files and piece hashes left out)."""
    return {
        "info_hash": doc["info_hash"],
        "name": doc["name"],
        "title": doc["title"],
        "state": doc["state"],
        "single_file": doc["single_file"],
        "size": doc["size"],
        "file_count": doc["file_count"],
        "files_from": doc["files_from"],
        "has_torrent_file": doc["has_torrent_file"],
        "piece_length": doc["piece_length"],
        "private": doc["private"],
        "sites": doc["sites"],
        "location": _public_location(doc.get("location")),
        "unavailable": doc["unavailable"],
    }


def _public_location(location: Doc | None) -> dict[str, Any] | None:
    if not location:
        return None
    return {
        "path": location["path"],
        "kind": location["kind"],
        "verified": location.get("verified"),
        "verified_at": location.get("verified_at"),
        "located_at": location["located_at"],
    }


def local_paths(doc: Doc) -> list[str | None]:
    """Where each file of a located torrent lives on disk (None for padding or when not located)."""
    location = doc.get("location")
    files = doc.get("files") or []
    if not location:
        return [None] * len(files)
    relative = location.get("files") or [f["path"] for f in files]
    if location["kind"] == "file":
        base = location["path"].rpartition("/")[0]
    else:
        base = location["path"].rstrip("/")
    pairs = zip(files, relative, strict=True)
    return [None if f.get("pad") else f"{base}/{rel}" for f, rel in pairs]


def reseed_view(doc: Doc) -> dict[str, Any]:
    """The reseed lookup: the torrent, where each file lives, and whether it was verified."""
    files = [
        {"path": f["path"], "size": f["size"], "local_path": path}
        for f, path in zip(doc.get("files") or [], local_paths(doc), strict=True)
    ]
    return {**public_torrent(doc), "files": files}


# ---------------------------------------------------------------- search

SEARCH_TOKEN_CAP = 2000  # a token with more torrents than this is only a filter


def search_torrents(db: Database, query: str, *, limit: int = 50) -> list[Doc]:
    """Torrents whose title tokens include every token of the query (group, artists, year, name).

    Each token is one keyed read of torrents/by_title_token, capped: a token
    too common to narrow anything ("the", "flac") only filters what rarer
    tokens found. Results come in title order.
    """
    tokens = title_tokens(query)
    if not tokens:
        raise InvalidQueryError("q must contain at least one letter or digit.", field="q")
    narrowing: list[set[str]] = []
    for token in tokens:
        rows = db.view("torrents", "by_title_token", key=token, limit=SEARCH_TOKEN_CAP + 1)
        if len(rows) <= SEARCH_TOKEN_CAP:
            narrowing.append({row["id"] for row in rows})
    if not narrowing:  # every token is everywhere: too broad to answer
        raise InvalidQueryError("The query is too broad: add a less common word.", field="q")
    ids = set.intersection(*narrowing)
    docs = [d for d in db.get_many(sorted(ids)).values() if set(tokens) <= set(d["search_tokens"])]
    docs.sort(key=lambda d: (d.get("title") or "", d["info_hash"]))
    return docs[:limit]
