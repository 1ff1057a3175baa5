"""Match a source's files against the torrent registry, as an ingest listing would be.

When a sync order ends `synchronised` (app/api/sources.py), the source's
present files are grouped like the ingest scanner groups a volume: one
listing per top-level directory under a content path (kind "directory",
file paths relative to it) and one per loose file (kind "file"). Listing
paths are content-root relative, marked `content:/<location>`
(CONTENT_PREFIX; the content root is "content" in app/storage/status.py):
never an absolute path, so they cannot be taken for an ingest volume's.
The listings go to the very operation POST /api/ingest calls
(app/ingest/record.ingest_listings), as the actor `source:<id>`, so a match
records the torrent `located` there and fills its download tasks, and
matching the same files again writes nothing.

Bounded: the files are read a page of files.MAX_PAGE at a time, at most
MAX_FILES of them (a larger source is matched in part: "truncated"), and
sent MAX_LISTINGS listings per ingest call (the batch cap of the API).
A file's content path is taken from its own record (`location` is
`<content path>/<filename>`), so files recorded under an older content
path are listed where they are.
"""

from __future__ import annotations

import collections
from datetime import datetime
from typing import Any

from app.ingest import record
from app.ingest.parse import (
    DIRECTORY,
    FILE,
    MAX_BATCH_FILES,
    MAX_BATCH_LISTINGS,
    ListedFile,
    Listing,
)
from app.ingest.report import MATCHED, SEVERAL_MATCHED
from app.sources import files
from app.store.couch import Database
from app.store.events import Doc

CONTENT_PREFIX = "content:/"  # a path relative to the content root
MAX_FILES = MAX_BATCH_FILES  # files read per match: as many as one listing may hold
MAX_LISTINGS = MAX_BATCH_LISTINGS  # listings per ingest call

Entry = tuple[str, str]  # (listing path, kind)


def actor_of(source_id: str) -> str:
    """The actor of the events a source's matching records."""
    return f"source:{source_id}"


def content_listing_path(location: str) -> str:
    """The listing path of a content-root relative location: `content:/<location>`."""
    return CONTENT_PREFIX + location.strip("/")


def _place(doc: Doc) -> tuple[Entry, str] | None:
    """Where a present file belongs: its listing (path, kind) and its path inside it."""
    location, filename = doc.get("location"), doc.get("filename")
    if not isinstance(location, str) or not isinstance(filename, str):
        return None
    if not location.endswith("/" + filename):
        return None
    base = location[: -len(filename) - 1]
    top, _, rest = filename.partition("/")
    if not rest:  # a loose file: a listing of its own
        return (content_listing_path(location), FILE), filename
    return (content_listing_path(f"{base}/{top}"), DIRECTORY), rest


def _present_files(db: Database, source_id: str) -> tuple[list[Doc], bool]:
    """The source's present files with a size, at most MAX_FILES; and whether more were left."""
    found: list[Doc] = []
    after: str | None = None
    while True:
        docs, after = files.list_files(db, source_id, after=after, limit=files.MAX_PAGE)
        found.extend(d for d in docs if d.get("present") and isinstance(d.get("size"), int))
        if len(found) >= MAX_FILES:
            return found[:MAX_FILES], True
        if after is None:
            return found, False


def source_listings(db: Database, source_id: str) -> tuple[list[Listing], bool]:
    """The listings of the source's present files, by path; and whether files were left out."""
    docs, truncated = _present_files(db, source_id)
    grouped: dict[Entry, dict[str, int]] = collections.defaultdict(dict)
    for doc in docs:
        placed = _place(doc)
        if placed is not None:
            entry, inner = placed
            grouped[entry][inner] = doc["size"]
    listings = [
        Listing(
            path=path,
            kind=kind,
            files=tuple(ListedFile(p, size) for p, size in sorted(listed.items())),
            verified={},
        )
        for (path, kind), listed in sorted(grouped.items())
    ]
    return listings, truncated


def match_source(db: Database, source_id: str, *, now: datetime) -> dict[str, Any]:
    """Match the source's present files against the registry; a summary of what it did.

    {"listings": n, "matched": listings that matched a torrent, "recorded":
    torrents newly located (or moved) here, "truncated": files were left out}.
    """
    listings, truncated = source_listings(db, source_id)
    summary = {"listings": len(listings), "matched": 0, "recorded": 0, "truncated": truncated}
    for start in range(0, len(listings), MAX_LISTINGS):
        batch = listings[start : start + MAX_LISTINGS]
        reports = record.ingest_listings(db, batch, actor=actor_of(source_id), now=now)
        for report in reports:
            if report["outcome"] in (MATCHED, SEVERAL_MATCHED):
                summary["matched"] += 1
            summary["recorded"] += sum(m["location"] == "recorded" for m in report["matched"])
    return summary
