"""Bytes and JSON in, facts out: metainfo's parsers, with their errors as the API's.

metainfo raises plain ValueErrors (it runs on workers' machines too); this is
the boundary where they become the registry's stable error codes.
"""

from __future__ import annotations

from typing import Any

from app.errors import (
    InvalidGazelleError,
    InvalidInfoHashError,
    InvalidTorrentFileError,
    InvalidTorrentIdError,
)
from metainfo import gazelle, torrent
from metainfo.errors import GazelleError, InfoHashError, TorrentFileError, TorrentIdError
from metainfo.gazelle import GazelleTorrent
from metainfo.torrent import ParsedTorrent


def parse_torrent_file(data: bytes) -> ParsedTorrent:
    """Read a .torrent (metainfo.torrent); raise InvalidTorrentFileError saying what is wrong."""
    try:
        return torrent.parse_torrent_file(data)
    except TorrentFileError as exc:
        raise InvalidTorrentFileError(str(exc)) from None


def parse_gazelle(raw: Any) -> GazelleTorrent:
    """Check and reduce a Gazelle response object (or its success envelope)."""
    try:
        return gazelle.parse_gazelle(raw)
    except GazelleError as exc:
        raise InvalidGazelleError(str(exc)) from None
    except TorrentIdError as exc:
        raise InvalidTorrentIdError(str(exc), field=exc.field) from None
    except InfoHashError as exc:
        raise InvalidInfoHashError(str(exc), info_hash=exc.info_hash) from None
