"""A source's files: one projection per file, recorded a worker's batch at a time.

Why one aggregate per file, `sourcefile:<source id>:<sha1 of filename>`,
rather than one document per source holding every file: a gallery may hold
tens of thousands of files, and a per-source document would grow without
bound, be rewritten whole on every batch and make every concurrent batch of
the same source conflict. Per-file projections are small, the ingest side
matches them like other files (views `sources/files_by_key` [normalised
location, size] and `sources/files_by_sha256`), and a batch still costs
the validator once: the whole files call is ONE event whose changes are
the files (app/store/events.py), written with one `_bulk_docs` of
projections.

Events (one per files call; a change per file that changed; the change
names are past tense, the `status` in data is the API's word):
- `downloaded`       {source_id, filename, location, order, round, status:
  "downloaded", size, sha256} → AMQP GL_FILE_DOWNLOADED {source_id, filename}
- `download_skipped` {…, status: "skipped", size, sha256}
  → AMQP GL_FILE_DOWNLOAD_SKIPPED {source_id, filename}
- `reported_missing` {…, status: "missing_remotely", size?, sha256?}: gone
  remotely; kept locally (the source does not sync remote deletes) when it
  carries the local copy's size and sha256, gone locally too without them
- `deleted`          {…, status: "deleted", size?, sha256?}: gone remotely,
  and the worker deleted the local copy
`location` is `<content path>/<filename>`, relative to the content root, with
the content path the reporting worker was told when it leased the order
(app/sources/dispatch.py), not the source's current one.
A file reported again in the same order with the same facts records nothing
(a retried call); the next order's report is a new change, so every sync's
downloads and skips are in the log for the AMQP publisher.

The projection's `remote_status` is "found" (downloaded, skipped) or
"not_found"; listings show "unknown" for a file that the source's latest
synchronised order did not report (as the original's synchroniser did).
`present` says whether the file is on the content volume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import datetime
from typing import Any

from app.errors import BatchTooLargeError, InvalidStatusError, ValidationFailedError
from app.ids import MAX_SAFE_INT
from app.sources import aggregate, orders
from app.sources.checks import check_filename
from app.store.commit import check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from metainfo.names import normalize_path

TYPE = "sourcefile"
DDOC = "sources"
MAX_FILES = 1000  # per call: one event and one _bulk_docs of projections
DOWNLOADED, SKIPPED, MISSING, DELETED = "downloaded", "skipped", "missing_remotely", "deleted"
STATUSES = (DOWNLOADED, SKIPPED, MISSING, DELETED)
EVENT_NAMES = {
    DOWNLOADED: "downloaded",
    SKIPPED: "download_skipped",
    MISSING: "reported_missing",
    DELETED: "deleted",
}
FOUND, NOT_FOUND, UNKNOWN = "found", "not_found", "unknown"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_PAGE = 1000


def file_doc_id(source_id: str, filename: str) -> str:
    """`sourcefile:<source id>:<sha1 of filename>`: a fixed-length id for any file name."""
    digest = hashlib.sha1(filename.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{TYPE}:{source_id}:{digest}"


@dataclasses.dataclass(frozen=True)
class FileReport:
    """One checked entry of a worker's files call."""

    filename: str
    status: str
    size: int | None = None
    sha256: str | None = None


# ---------------------------------------------------------------- checks


def check_file_reports(raw: Any) -> list[FileReport]:
    """The checked `files` list (at most MAX_FILES); any bad entry refuses the whole call."""
    if not isinstance(raw, list):
        raise ValidationFailedError("files must be a list.", field="files")
    if len(raw) > MAX_FILES:
        raise BatchTooLargeError(
            f"At most {MAX_FILES} files per call, got {len(raw)}.", limit=MAX_FILES
        )
    return [_check_entry(entry, index) for index, entry in enumerate(raw)]


def _check_entry(entry: Any, index: int) -> FileReport:
    if not isinstance(entry, dict):
        raise ValidationFailedError(f"files[{index}] must be an object.", index=index)
    filename = check_filename(entry.get("filename"))
    status = entry.get("status")
    if status not in STATUSES:
        raise InvalidStatusError(
            f"files[{index}].status must be one of {', '.join(STATUSES)}, got {status!r}.",
            index=index,
        )
    size, sha256 = entry.get("size"), entry.get("sha256")
    needed = status in (DOWNLOADED, SKIPPED)
    if size is not None or needed:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SAFE_INT:
            raise ValidationFailedError(
                f"files[{index}].size must be a whole number of bytes.", index=index
            )
    if sha256 is not None or needed:
        sha256 = sha256.lower() if isinstance(sha256, str) else sha256
        if not isinstance(sha256, str) or not SHA256.match(sha256):
            raise ValidationFailedError(
                f"files[{index}].sha256 must be 64 hexadecimal digits.", index=index
            )
    return FileReport(filename, status, size, sha256)


# ---------------------------------------------------------------- projection


def apply_file_event(state: Doc, event: Doc) -> None:
    """Project one file report (see the module docstring); the last report wins."""
    data = event["data"]
    status = data["status"]
    state.update(
        source_id=data["source_id"],
        filename=data["filename"],
        location=data["location"],
        key=normalize_path(data["location"]),
        status=status,
        order=data["order"],
        round=data["round"],
        reported_at=event["at"],
    )
    state.setdefault("first_reported_at", event["at"])
    for key in ("size", "sha256"):
        if key in data:
            state[key] = data[key]
    state["remote_status"] = FOUND if status in (DOWNLOADED, SKIPPED) else NOT_FOUND
    # a worker describes the local copy it still has (size, sha256); without them it has none
    kept = status == MISSING and state.get("present", False) and "sha256" in data
    state["present"] = status in (DOWNLOADED, SKIPPED) or kept


def public_file(doc: Doc, last_synchronised_round: int = 0) -> dict[str, Any]:
    """A file as the API lists it; "unknown" when the last good sync did not report it."""
    remote = doc.get("remote_status", UNKNOWN)
    if doc.get("round", 0) < last_synchronised_round:
        remote = UNKNOWN
    return {
        "filename": doc["filename"],
        "location": doc["location"],
        "status": doc["status"],
        "remote_status": remote,
        "present": doc.get("present", False),
        "size": doc.get("size"),
        "sha256": doc.get("sha256"),
        "order": doc.get("order"),
        "reported_at": doc.get("reported_at"),
    }


# ---------------------------------------------------------------- recording


def _file_decision(data: dict[str, Any]) -> Decision:
    """Record the report unless this order reported the very same facts already."""
    name = EVENT_NAMES[data["status"]]

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None and all(state.get(k) == v for k, v in data.items()):
            return None
        return name, data

    return decide


def record_files(
    db: Database,
    source_id: str,
    order: Any,
    reports: list[FileReport],
    *,
    actor: str,
    now: datetime,
) -> dict[str, int]:
    """Record a worker's file reports in one event; return {"recorded", "changed"}.

    Accepted whatever the order's state (after its lease expired, after it
    finished): a file on disk is a fact (invariant 3). Who may report is the
    caller's check (app/sources/dispatch.check_reporter). A file named twice
    in one call counts once, as its last entry says.
    """
    source = aggregate.get_source(db, source_id)
    round_number = orders.parse_order_id(order, source_id)
    state = orders.check_round_exists(db, source_id, round_number)
    base = content_path_for(state, round_number, actor) or source["content_path"]
    latest = {report.filename: report for report in reports}
    decisions = [
        (
            file_doc_id(source_id, r.filename),
            _file_decision(_data(source_id, round_number, base, r)),
        )
        for r in latest.values()
    ]
    outcomes = commit(db, decisions, actor=actor, now=now) if decisions else []
    check_none_lost(outcomes)
    return {"recorded": len(reports), "changed": sum(1 for o in outcomes if o.recorded)}


def content_path_for(state: Doc, round_number: int, holder: str) -> str | None:
    """The content path the round's worker was told when it leased it (None: not known).

    The holder's own, else the round's latest (an admin reporting for it);
    a worker put its files there, whatever the source says now.
    """
    paths: dict[str, str] = orders.round_record(state, round_number).get("content_paths") or {}
    return paths.get(holder) or (list(paths.values())[-1] if paths else None)


def _data(source_id: str, round_number: int, base: str, report: FileReport) -> dict[str, Any]:
    """The event data of one file report; `location` is `<content path>/<filename>`."""
    data: dict[str, Any] = {"source_id": source_id, "filename": report.filename}
    data["location"] = f"{base}/{report.filename}"
    data.update(order=orders.order_id(source_id, round_number), round=round_number)
    data["status"] = report.status
    if report.size is not None:
        data.update(size=report.size, sha256=report.sha256)
    return data


# ---------------------------------------------------------------- queries


def known_files(db: Database, source_id: str) -> list[str]:
    """The file names recorded as present locally (what the worker need not fetch again)."""
    rows = db.iter_view(DDOC, "files_by_source", startkey=[source_id], endkey=[source_id, {}])
    return [row["key"][1] for row in rows if row["value"][1]]


def list_files(
    db: Database, source_id: str, *, after: str | None = None, limit: int = 100
) -> tuple[list[Doc], str | None]:
    """A page of the source's files by name after `after`; the next page's `after` or None."""
    params: dict[str, Any] = {"endkey": [source_id, {}], "include_docs": True}
    params["startkey"] = [source_id, after] if after is not None else [source_id]
    params["limit"] = limit + 1 + (after is not None)  # the `after` row itself comes back
    rows = db.view(DDOC, "files_by_source", **params)
    rows = [row for row in rows if after is None or row["key"][1] != after]
    docs = [row["doc"] for row in rows[:limit] if row.get("doc")]
    more = len(rows) > limit
    return docs, (docs[-1]["filename"] if more and docs else None)


def count_files(db: Database, source_id: str) -> dict[str, int]:
    """How many files the source has in each status, and how many are present locally."""
    rows = db.view(DDOC, "file_counts", startkey=[source_id], endkey=[source_id, {}], group_level=3)
    counts = dict.fromkeys(("total", "present", *STATUSES), 0)
    for row in rows:
        _, status, present = row["key"]
        counts["total"] += row["value"]
        counts["present"] += row["value"] if present else 0
        if status in counts:
            counts[status] += row["value"]
    return counts
