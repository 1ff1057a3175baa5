"""Verify data on disk against a torrent's SHA-1 piece hashes (`distleech ingest scan --verify`).

Pieces run across file boundaries, so the torrent's files are read as one
stream, in the torrent's order, through one fixed buffer: memory stays the
same whatever the size of the data. Hashing and reading release the GIL, so
a progress bar costs nothing measurable. The first piece that differs ends
the check: "failed at piece N" is what the coordinator records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metainfo.names import normalize_path
from metainfo.torrent import ParsedTorrent

CHUNK_BYTES = 1 << 20
VERIFIED, FAILED, NOT_VERIFIABLE = "verified", "failed", "not_verifiable"

Progress = Callable[[int], object]


@dataclasses.dataclass(frozen=True)
class LayoutEntry:
    """One file of the stream: where it is on disk (None: padding, read as zeros)."""

    name: str  # the torrent's path of the file, for reports
    path: Path | None
    size: int


@dataclasses.dataclass
class VerifyResult:
    """The outcome: verified, failed at piece N (0-based), or not verifiable (and why)."""

    status: str
    pieces: int
    piece: int | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    reason: str | None = None
    bytes_read: int = 0

    def as_verification(self) -> dict[str, Any]:
        """The `verified` entry a listing carries to POST /api/ingest."""
        result: dict[str, Any] = {"status": self.status, "pieces": self.pieces}
        if self.piece is not None:
            result["piece"] = self.piece
        if self.reason:
            result["reason"] = self.reason[:1000]
        return result


class _PieceHasher:
    """Feeds bytes into the current piece's SHA-1 and checks each piece as it completes."""

    def __init__(self, piece_length: int, pieces: bytes) -> None:
        self.piece_length, self.pieces = piece_length, pieces
        self.index, self.need = 0, piece_length
        self.hasher = hashlib.sha1()
        self.files: list[str] = []  # the files the current piece has bytes from

    def update(self, data: memoryview, name: str) -> bool:
        """Hash `data` (from file `name`); False as soon as a completed piece differs."""
        if data and (not self.files or self.files[-1] != name):
            self.files.append(name)
        while data:
            take = min(len(data), self.need)
            self.hasher.update(data[:take])
            data, self.need = data[take:], self.need - take
            if self.need == 0:
                if not self.close_piece():
                    return False
                if data:
                    self.files.append(name)
        return True

    def close_piece(self) -> bool:
        """Compare the piece hashed so far; on success start the next one."""
        start = self.index * 20
        if self.hasher.digest() != self.pieces[start : start + 20]:
            return False
        self.index, self.need = self.index + 1, self.piece_length
        self.hasher = hashlib.sha1()
        self.files = []
        return True

    def failure(self, reason: str | None = None) -> VerifyResult:
        count = len(self.pieces) // 20
        return VerifyResult(FAILED, count, self.index, list(self.files), reason)


def verify_pieces(
    layout: Sequence[LayoutEntry],
    piece_length: int,
    pieces: bytes,
    *,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> VerifyResult:
    """Check the files of `layout`, read as one stream, against the piece hashes."""
    total = sum(entry.size for entry in layout)
    count = len(pieces) // 20
    if piece_length <= 0 or len(pieces) % 20 or count != math.ceil(total / piece_length):
        return VerifyResult(NOT_VERIFIABLE, count, reason="the piece hashes do not fit the files")
    hasher = _PieceHasher(piece_length, pieces)
    buffer = memoryview(bytearray(chunk_bytes))
    read = 0
    for entry in layout:
        failure = _feed(entry, hasher, buffer, progress)
        read += entry.size
        if failure is not None:
            failure.bytes_read = read
            return failure
    if hasher.need != piece_length and not hasher.close_piece():  # the last, shorter piece
        return dataclasses.replace(hasher.failure(), bytes_read=read)
    return VerifyResult(VERIFIED, count, bytes_read=read)


def _feed(
    entry: LayoutEntry, hasher: _PieceHasher, buffer: memoryview, progress: Progress | None
) -> VerifyResult | None:
    """Stream one file into the hasher; a failed piece, or a short or missing file, fails."""
    if entry.size == 0:
        return None
    if entry.path is None:  # padding: zeros that are never on disk
        return _feed_zeros(entry, hasher, buffer, progress)
    remaining = entry.size
    try:
        with entry.path.open("rb", buffering=0) as stream:
            while remaining:
                got = stream.readinto(buffer[: min(len(buffer), remaining)])
                if not got:
                    return hasher.failure(f"{entry.name} is shorter than the torrent says")
                remaining -= got
                if not hasher.update(buffer[:got], entry.name):
                    return hasher.failure()
                if progress is not None:
                    progress(got)
    except OSError as exc:
        return hasher.failure(f"{entry.name} cannot be read: {exc.strerror or exc}")
    return None


def _feed_zeros(
    entry: LayoutEntry, hasher: _PieceHasher, buffer: memoryview, progress: Progress | None
) -> VerifyResult | None:
    zeros = memoryview(bytes(len(buffer)))
    remaining = entry.size
    while remaining:
        take = min(len(zeros), remaining)
        if not hasher.update(zeros[:take], entry.name):
            return hasher.failure()
        remaining -= take
        if progress is not None:
            progress(take)
    return None


def layout_for(
    torrent: ParsedTorrent, root: Path, kind: str, listed: Sequence[str]
) -> list[LayoutEntry] | None:
    """Where each file of the torrent is under a listing's root, in torrent order.

    `listed` holds the listing's relative paths; a torrent file is found by its
    normalised path (case and Unicode form may differ on disk). None when a
    file is not there: the data cannot be verified.
    """
    by_key = {normalize_path(path): path for path in listed}
    layout = []
    for entry in torrent.files:
        if entry.pad:
            layout.append(LayoutEntry(entry.path, None, entry.size))
            continue
        local = by_key.get(normalize_path(entry.path))
        if local is None:
            return None
        path = root if kind == "file" else root / local
        layout.append(LayoutEntry(entry.path, path, entry.size))
    return layout
