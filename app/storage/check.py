"""Check a root on disk against the records: what they say is there but is not.

`distleech storage check ROOT` walks the root's local directory once (one
listing of names and sizes; no file is read), then goes through the records
of that root (storage/by_root, reduce=false: a page of rows at a time, never
a reduce): a recorded file that is not on disk is missing; one whose size
differs is mismatched. Files on disk that no record names are only counted
("unrecorded": an ingest volume holds what nobody matched yet). Only regular
files count as on disk: a symbolic link in place of a recorded file is
reported missing (walk).

The result is stored in `_local/storage-check:<root>` (a _local document:
each site checks its own disks, nothing replicates), so GET /api/storage and
the dashboard show "files missing at the last check" without walking anything.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from app.config import Settings
from app.errors import StorageRootNotFoundError, ValidationFailedError
from app.registry.queries import local_paths
from app.storage import status
from app.store.couch import Database
from app.store.events import Doc
from app.timeutil import iso

PAGE = 100  # located torrents per page: each carries its whole file list


@dataclasses.dataclass(frozen=True)
class Root:
    """A root as a check sees it: its kind, its name and the recorded directories it spans."""

    kind: str
    name: str
    directories: tuple[str, ...] = ()


def find_root(db: Database, settings: Settings, name: str) -> Root:
    """The root called `name`; raise StorageRootNotFoundError naming the known ones."""
    if name == status.CONTENT_ROOT:
        return Root(status.CONTENT, name)
    volumes = status.configured_volumes(settings)
    recorded = [row["key"][1] for row in _ingest_groups(db)]
    known = sorted({status.volume_of(d, volumes) for d in recorded} | set(volumes))
    cleaned = name.rstrip("/") or "/"
    if cleaned not in known:
        raise StorageRootNotFoundError(
            f"No root is called {name!r}; known: {', '.join([status.CONTENT_ROOT, *known])}.",
            root=name,
        )
    return Root(status.INGEST, cleaned, tuple(status.directories_of(cleaned, recorded, volumes)))


def _ingest_groups(db: Database) -> list[Doc]:
    """The recorded ingest directories: one grouped reduce of the ingest range (a CLI's cost)."""
    ingest = [status.INGEST]
    return db.view(status.DDOC, status.VIEW, group_level=2, startkey=ingest, endkey=[*ingest, {}])


def local_path_of(root: Root, settings: Settings, given: str | None) -> Path:
    """Where the root is on this machine: --path, else the configured or recorded path."""
    path = given or (settings.storage.content_root if root.kind == status.CONTENT else root.name)
    if not path:
        raise ValidationFailedError(
            "The content root's path here is unknown: give --path or set storage.content_root.",
            field="path",
        )
    if not os.path.isdir(path):
        raise ValidationFailedError(f"{path} is not a directory here.", field="path", path=path)
    return Path(path)


def recorded_files(db: Database, root: Root) -> Iterator[tuple[str, int | None]]:
    """(path relative to the root, size) of every file the records place on the root."""
    if root.kind == status.CONTENT:
        key = [status.CONTENT, root.name]
        rows = db.iter_view(status.DDOC, status.VIEW, reduce=False, startkey=key, endkey=[*key, {}])
        for row in rows:
            yield row["key"][2], row["value"][1]
        return
    prefix = "/" if root.name == "/" else root.name + "/"
    for directory in root.directories:
        key = [status.INGEST, directory]
        rows = db.iter_view(
            status.DDOC,
            status.VIEW,
            page_size=PAGE,
            reduce=False,
            include_docs=True,
            startkey=key,
            endkey=[*key, {}],
        )
        for row in rows:
            doc = row.get("doc") or {}
            for file, path in zip(doc.get("files") or [], local_paths(doc), strict=True):
                if path is not None and path.startswith(prefix):
                    yield path[len(prefix) :], file.get("size")


def walk(local: Path) -> dict[str, int]:
    """Every regular file under `local`: its '/'-separated relative path and its size.

    lstat, never stat: a symbolic link is not a file of the root, even when it
    points at one (perhaps outside the root, with another file's size), so a
    recorded file that is a link is reported missing. Links to directories
    are not followed either (os.walk, followlinks=False).
    """
    found: dict[str, int] = {}
    for directory, _, names in os.walk(local, followlinks=False):
        for name in names:
            path = Path(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[path.relative_to(local).as_posix()] = info.st_size
    return found


def compare(
    records: Iterator[tuple[str, int | None]], on_disk: dict[str, int], examples: int
) -> dict[str, Any]:
    """Count what the records name that is missing or of another size; keep the first few."""
    result: dict[str, Any] = {"checked": 0, "missing": 0, "examples": [], "mismatched": 0}
    result["mismatched_examples"] = []
    seen: set[str] = set()
    for relative, size in records:
        if relative in seen:  # the same data recorded twice (two torrents over one directory)
            continue
        seen.add(relative)
        result["checked"] += 1
        if relative not in on_disk:
            result["missing"] += 1
            if len(result["examples"]) < examples:
                result["examples"].append(relative)
        elif size is not None and on_disk[relative] != size:
            result["mismatched"] += 1
            if len(result["mismatched_examples"]) < examples:
                found = on_disk[relative]
                result["mismatched_examples"].append(
                    {"location": relative, "size": size, "found": found}
                )
    result["unrecorded"] = len(on_disk.keys() - seen)
    return result


def check_root(
    db: Database, settings: Settings, name: str, *, path: str | None, now: datetime
) -> Doc:
    """Check one root against its records, store the result as its last check, return it.

    Example locations are relative to the root's path (for the content root,
    exactly the records' `location`).
    """
    root = find_root(db, settings, name)
    local = local_path_of(root, settings, path)
    on_disk = walk(local)
    result = compare(recorded_files(db, root), on_disk, settings.storage.check_examples)
    doc: Doc = {"_id": status.check_doc_id(root.name), "root": root.name, "kind": root.kind}
    doc.update(path=str(local), at=iso(now), **result)
    stored = db.get_or_none(doc["_id"])
    if stored is not None:
        doc["_rev"] = stored["_rev"]
    db.put(doc)  # a check is one person's command: a conflict (two at once) is worth an error
    return doc
