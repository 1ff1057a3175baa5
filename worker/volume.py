"""An ingest volume as the scanner sees it: its top-level directories and loose files.

Each is one entry, listed as relative paths and sizes; an entry a BitTorrent
client is still writing, or whose names are not UTF-8, is skipped for a later scan.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Files a BitTorrent client is still writing: such an entry is left for a later scan.
PARTIAL_SUFFIXES = (".part", ".!qb", ".!ut", ".incomplete")
ARIA2_CONTROL = ".aria2"


@dataclasses.dataclass
class Entry:
    """One listing to send: a top-level directory or a loose file of a volume."""

    path: Path
    kind: str
    files: list[tuple[str, int]]
    skipped: str | None = None

    def listing(self, **extra: Any) -> dict[str, Any]:
        files = [{"path": rel, "size": size} for rel, size in self.files]
        return {"path": str(self.path), "kind": self.kind, "files": files, **extra}


def _list_directory(root: Path) -> tuple[list[tuple[str, int]], str | None]:
    """Every regular file under root (relative posix path, size); or why to skip it."""
    files = []
    for directory, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(directory, name)
            if name.lower().endswith(PARTIAL_SUFFIXES):
                return [], f"still downloading ({path.relative_to(root)})"
            try:
                if not path.is_file():  # sockets, broken links
                    continue
                files.append((path.relative_to(root).as_posix(), path.stat().st_size))
            except OSError:
                continue
    return sorted(files), None if files else "no files"


def iter_entries(volume: Path) -> Iterator[Entry]:
    """The volume's top-level directories and loose files, in name order.

    Hidden entries are not downloads. aria2 keeps `<name>.aria2` beside a
    download until it completes, so such an entry is skipped for now.
    """
    names = sorted(os.listdir(volume))
    in_progress = {n[: -len(ARIA2_CONTROL)] for n in names if n.endswith(ARIA2_CONTROL)}
    for name in names:
        path = Path(os.path.abspath(volume / name))
        if name.startswith(".") or name.endswith(ARIA2_CONTROL):
            continue
        if not _is_utf8(name):
            yield Entry(path, "directory", [], skipped="the name is not UTF-8")
        elif name in in_progress:
            yield Entry(path, "directory", [], skipped="still downloading (aria2)")
        elif path.is_dir() and not path.is_symlink():
            files, skipped = _list_directory(path)
            if any(not _is_utf8(rel) for rel, _ in files):
                files, skipped = [], "a file name is not UTF-8"
            yield Entry(path, "directory", files, skipped)
        elif path.is_file():
            yield Entry(path, "file", [(name, path.stat().st_size)])


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir keeps undecodable bytes as surrogates
        return False
    return True
