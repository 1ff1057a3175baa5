"""Storage status: files and bytes recorded per root, free space, and the last check's result.

Two kinds of root:
- "content": the workers' content root, where sources' files live (their
  `location` is relative to it). One root; its path on this machine is
  `storage.content_root` (empty: unknown, so its free space is null).
- "ingest" volumes: what the ingest scanner walked. A torrent's recorded
  location is the absolute path of one top-level entry of the volume it
  scanned (worker/volume.py), so the directory holding that path is the
  volume, with no configuration. `storage.ingest_volumes` (comma-separated
  recorded paths) groups everything under each of them into one volume, and
  lists it even before anything is recorded there. A volume is named by its
  path, which is also where its free space is measured on this machine (null
  when it is not mounted here).

Each location is counted once: two torrents recorded at one directory (the
same album from two sites, cross-seeded) are one copy on disk, as `storage
check` sees it. The count reads storage/by_root grouped by location
(group_level=3: one row per [kind, root, location], summed over the records
there, with their number), and takes one record's share of each location.
Records at one location normally hold the same files; when they do not, the
share is their average, and `storage check` (which compares file by file)
is the exact figure.

The counts grow with the data, so they come from a snapshot, as /stats's do
(app/stats.py): the scheduler's `snapshot_stats` job counts at most every
RECOUNT_EVERY and stores the result in `_local/storage-snapshot` (never
replicated: each site counts its own copy). GET /api/storage and the
dashboard read that document, one `_local/storage-check:<root>` document per
root and `statvfs` per root; the anonymous totals (storage_totals_now) read
that document only. No request reduces (COUCHDB-COMPAT.md: on the bundled
server a reduce re-reads its range), except the very first, which counts and
stores the snapshot for every later one.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timedelta

from app.config import Settings
from app.store.couch import Database, DocumentConflictError
from app.store.events import Doc
from app.timeutil import iso, parse_iso

log = logging.getLogger(__name__)

DDOC, VIEW = "storage", "by_root"
CONTENT, INGEST = "content", "ingest"
CONTENT_ROOT = "content"  # the one content root's name
SNAPSHOT_ID = "_local/storage-snapshot"
CHECK_PREFIX = "_local/storage-check:"
# The scheduler's job runs every minute or so; counting storage as often would double
# the job's reduce work on the bundled server for figures that change slowly.
RECOUNT_EVERY = timedelta(minutes=5)


# ---------------------------------------------------------------- the snapshot


def count_recorded(db: Database) -> list[Doc]:
    """Files and bytes per [kind, recorded root], each location once (the snapshot job's).

    One grouped reduce with a row per location (see the module docstring).
    """
    totals: dict[tuple[str, str], Doc] = {}
    for row in db.view(DDOC, VIEW, group_level=3):
        kind, root = row["key"][0], row["key"][1]
        files, size, records = _location_share(row["value"])
        target = totals.setdefault(
            (kind, root), {"kind": kind, "root": root, "files": 0, "bytes": 0}
        )
        target["files"] += files
        target["bytes"] += size
    return list(totals.values())


def _location_share(value: list[int | float]) -> tuple[int, int, int]:
    """(files, bytes, records) of one location: one record's share of the summed values."""
    records = max(1, int(value[2])) if len(value) > 2 else 1
    return round(value[0] / records), round(value[1] / records), records


def snapshot_storage(db: Database, now: datetime, *, force: bool = False) -> Doc:
    """Recount and store the storage snapshot, unless one younger than RECOUNT_EVERY is stored.

    Called from the scheduler's `snapshot_stats` job. A lost write race keeps
    the other writer's copy: both counted the same records.
    """
    stored = db.get_or_none(SNAPSHOT_ID)
    if stored is not None and not force and _recent(stored, now):
        return stored
    snapshot: Doc = {"_id": SNAPSHOT_ID, "as_of": iso(now), "roots": count_recorded(db)}
    if stored is not None:
        snapshot["_rev"] = stored["_rev"]
    try:
        db.put(snapshot)
    except DocumentConflictError:
        log.info("storage snapshot written concurrently; keeping the other copy")
    return snapshot


def _recent(snapshot: Doc, now: datetime) -> bool:
    as_of = snapshot.get("as_of")
    return isinstance(as_of, str) and parse_iso(as_of) > now - RECOUNT_EVERY


def get_snapshot(db: Database, now: datetime, *, stale: bool = False) -> Doc:
    """The stored snapshot (one GET); counted now only when none exists yet.

    With `stale` (indexes still warming) a missing one is not counted: that
    would wait for the index to build. The scheduler stores one soon.
    """
    stored = db.get_or_none(SNAPSHOT_ID)
    if stored is not None:
        return stored
    if stale:
        return {"_id": SNAPSHOT_ID, "as_of": None, "roots": []}
    return snapshot_storage(db, now, force=True)


# ---------------------------------------------------------------- roots


def configured_volumes(settings: Settings) -> list[str]:
    """`storage.ingest_volumes` as clean absolute paths, in the order given."""
    paths = [_clean(part) for part in settings.storage.ingest_volumes.split(",") if part.strip()]
    return list(dict.fromkeys(paths))


def _clean(path: str) -> str:
    return path.strip().rstrip("/") or "/"


def volume_of(directory: str, volumes: list[str]) -> str:
    """The configured volume holding a recorded directory (the longest), else the directory."""
    holders = [v for v in volumes if directory == v or directory.startswith(v.rstrip("/") + "/")]
    return max(holders, key=len) if holders else directory


def directories_of(volume: str, recorded: list[str], volumes: list[str]) -> list[str]:
    """The recorded directories that make up a volume (see volume_of)."""
    return [directory for directory in recorded if volume_of(directory, volumes) == volume]


def _empty_root(kind: str, name: str) -> Doc:
    return {"kind": kind, "name": name, "files": 0, "bytes": 0}


def fold_roots(snapshot: Doc, settings: Settings) -> list[Doc]:
    """The snapshot's counts per root: the content root, then every ingest volume by name."""
    volumes = configured_volumes(settings)
    content = _empty_root(CONTENT, CONTENT_ROOT)
    ingest = {name: _empty_root(INGEST, name) for name in volumes}
    for row in snapshot.get("roots") or []:
        if row["kind"] == CONTENT:
            target = content
        else:
            name = volume_of(row["root"], volumes)
            target = ingest.setdefault(name, _empty_root(INGEST, name))
        target["files"] += int(row["files"])
        target["bytes"] += int(row["bytes"])
    content["path"] = settings.storage.content_root or None
    for root in ingest.values():
        root["path"] = root["name"]
    return [content, *(ingest[name] for name in sorted(ingest))]


def disk_usage(path: str | None) -> tuple[int | None, int | None]:
    """(free, total) bytes of the file system holding `path` here; (None, None) when unknown."""
    if not path or not os.path.isdir(path):
        return None, None
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None, None
    return usage.free, usage.total


def check_doc_id(name: str) -> str:
    """`_local/storage-check:<root name>`: the last check of a root (never replicated)."""
    return f"{CHECK_PREFIX}{name}"


def public_check(doc: Doc | None) -> Doc | None:
    """The last check as the API shows it (None before the first)."""
    if doc is None:
        return None
    keys = ("at", "path", "checked", "missing", "examples", "mismatched", "mismatched_examples")
    return {key: doc.get(key) for key in keys}


# ---------------------------------------------------------------- the status


def get_storage(db: Database, settings: Settings, now: datetime, *, stale: bool = False) -> Doc:
    """Every root with its recorded files and bytes, free space and last check; and `as_of`.

    What GET /api/storage answers and the dashboard's Storage panel shows.
    """
    snapshot = get_snapshot(db, now, stale=stale)
    roots = fold_roots(snapshot, settings)
    for root in roots:
        root["free_bytes"], root["total_bytes"] = disk_usage(root["path"])
        root["last_check"] = public_check(db.get_or_none(check_doc_id(root["name"])))
    return {"roots": roots, "as_of": snapshot.get("as_of")}


def storage_totals(status: Doc) -> dict[str, int]:
    """Patchwork's storage statistics (get_storage_used, get_number_of_files) over every root.

    Takes get_storage's answer or the snapshot itself: both list roots with files and bytes.
    """
    return {
        "storage_used": sum(int(root["bytes"]) for root in status["roots"]),
        "number_of_files": sum(int(root["files"]) for root in status["roots"]),
    }


def storage_totals_now(db: Database, now: datetime, *, stale: bool = False) -> dict[str, int]:
    """The totals from the stored snapshot: one GET and a sum (anyone may ask, unthrottled).

    No statvfs and no check documents: the totals need neither. With no
    snapshot yet it is counted once and stored (get_snapshot), as /stats does.
    """
    return storage_totals(get_snapshot(db, now, stale=stale))


def format_storage_text(status: Doc) -> str:
    """One line per root, then when the counts were taken (for `distleech storage status`)."""
    lines = []
    for root in status["roots"]:
        free = "unknown" if root["free_bytes"] is None else f"{root['free_bytes']:,} bytes"
        check = root["last_check"]
        checked = (
            f"; {check['missing']:,} missing at the check of {check['at']}"
            if check
            else "; never checked"
        )
        lines.append(
            f"{root['kind']:<7} {root['name']}: {root['files']:,} files, "
            f"{root['bytes']:,} bytes recorded; free {free}{checked}"
        )
    lines.append(f"As of: {status['as_of']}")
    return "\n".join(lines)
