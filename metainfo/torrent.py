"""A .torrent file: its info hash (from the exact bytes of its info dictionary), files, pieces."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torf

from metainfo.errors import TorrentFileError

MAX_TORRENT_FILE_BYTES = 10_000_000  # torf's own limit: nothing real comes near it
MAX_FILES = 100_000


@dataclasses.dataclass(frozen=True)
class TorrentFileEntry:
    """One file of a torrent: its path relative to the torrent's root, and its size.

    A BEP 47 padding file (`pad`) is never on disk: it is skipped by matching
    and read as zeros by verification.
    """

    path: str
    size: int
    pad: bool = False

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "size": self.size}
        if self.pad:
            entry["pad"] = True
        return entry


@dataclasses.dataclass(frozen=True)
class ParsedTorrent:
    """What a .torrent file says: identity, layout and piece hashes."""

    info_hash: str
    name: str
    single_file: bool
    files: tuple[TorrentFileEntry, ...]
    piece_length: int
    pieces: bytes
    private: bool | None
    stored_bytes: bytes  # the file reduced to its info dictionary (see parse_torrent_file)

    @property
    def piece_count(self) -> int:
        return len(self.pieces) // 20


def _value_end(data: bytes, start: int) -> int:
    """Where the bencoded value starting at `start` ends (iterative: no recursion limit)."""
    depth, i = 0, start
    while True:
        c = data[i]
        if c in b"ld":
            depth, i = depth + 1, i + 1
        elif c == ord("e") and depth:
            depth, i = depth - 1, i + 1
        elif c == ord("i"):
            i = data.index(b"e", i) + 1
        elif 48 <= c <= 57:
            colon = data.index(b":", i)
            i = colon + 1 + int(data[i:colon])
        else:
            raise ValueError(f"unexpected byte at {i}")
        if depth == 0:
            return i


def raw_info_dict(data: bytes) -> bytes:
    """The exact bytes of the top-level `info` value: its SHA-1 is the info hash.

    Re-encoding a decoded dictionary is not enough: keys out of order or
    strings that are not UTF-8 would change the bytes, and so the hash.
    """
    if data[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    i = 1
    while data[i : i + 1] != b"e":
        key_end = _value_end(data, i)
        colon = data.index(b":", i)
        key = data[colon + 1 : key_end]
        value_end = _value_end(data, key_end)
        if key == b"info":
            return data[key_end:value_end]
        i = value_end
    raise ValueError("no info dictionary")


def parse_torrent_file(data: bytes) -> ParsedTorrent:
    """Read a .torrent with torf; raise TorrentFileError saying what is wrong.

    What is stored is the file reduced to `{"info": …}` with the info bytes
    untouched: the announce URLs of a site's .torrent carry the downloader's
    passkey, which must not replicate to other sites.
    """
    if not data:
        raise TorrentFileError("The .torrent file is empty.")
    if len(data) > MAX_TORRENT_FILE_BYTES:
        raise TorrentFileError(f"A .torrent file is at most {MAX_TORRENT_FILE_BYTES} bytes.")
    try:
        torrent = torf.Torrent.read_stream(data, validate=True)
        info_bytes = raw_info_dict(data)
    except (torf.TorfError, ValueError, IndexError) as exc:
        raise TorrentFileError(f"The .torrent file cannot be read: {exc}") from None
    info: dict[str, Any] = dict(torrent.metainfo["info"])
    single = "length" in info
    files = _torrent_files(info, single)
    if not files or len(files) > MAX_FILES:
        raise TorrentFileError(f"A torrent lists 1 to {MAX_FILES} files.")
    return ParsedTorrent(
        info_hash=hashlib.sha1(info_bytes).hexdigest(),
        name=str(info["name"]),
        single_file=single,
        files=files,
        piece_length=int(info["piece length"]),
        pieces=bytes(info["pieces"]),
        private=None if torrent.private is None else bool(torrent.private),
        stored_bytes=b"d4:info" + info_bytes + b"e",
    )


def _torrent_files(info: dict[str, Any], single: bool) -> tuple[TorrentFileEntry, ...]:
    if single:
        return (TorrentFileEntry(str(info["name"]), int(info["length"])),)
    return tuple(
        TorrentFileEntry(
            "/".join(str(part) for part in entry["path"]),
            int(entry["length"]),
            pad="p" in str(entry.get("attr", "")),
        )
        for entry in info["files"]
    )
