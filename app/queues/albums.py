"""Albums: the inventory and its metadata queue (the original distleech_server's).

An album is imported from a CSV row, leased to a metadata worker, and ends
with the torrents found for it (each becoming a download task) or "not
found", after which it is due again after `leases.retry_minutes`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import IO, Any

from app.errors import InvalidCsvError
from app.ids import normalize_key, stable_int_id
from app.queues import downloads
from app.queues.downloads import TorrentRef
from app.queues.holders import LEASED, READY, apply_lease_event, without_holders
from app.queues.leasing import QueueLeaser
from app.store.commit import always, check_none_lost, commit, confirm_states
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso

QUEUE = "metadata"
FOUND = "found"
ARTIST_COLUMN, TITLE_COLUMN = "Artist Name", "Album Title"
MAX_FIELD_CHARS = 1000
MAX_REJECTIONS_KEPT = 100


def album_doc_id(album_id: int) -> str:
    return f"album:{album_id}"


def apply_album_event(state: Doc, event: Doc) -> None:
    """Project one album event (see module docstring for the life cycle)."""
    if apply_lease_event(state, event):
        return
    name, data = event["name"], event["data"]
    if name == "imported":
        if "id" in state:
            return  # imported at two sites while apart: added once, as the first had it
        state.update(
            id=data["id"],
            sortArtist=data["sortArtist"],
            album=data["album"],
            key=data["key"],
            queue=QUEUE,
            state=READY,
            queue_group=0,
            available_at=event["at"],
            imported_at=event["at"],
            torrents=[],
            not_found=0,
            lease=None,
        )
    elif name == "torrents_found":
        known = {(t["site"], t["torrentId"]) for t in state["torrents"]}
        state["torrents"] += [
            t for t in data["torrents"] if (t["site"], t["torrentId"]) not in known
        ]
        if event.get("concurrent") and state["state"] == FOUND:
            return  # found at two sites while apart: the first filled it, this adds its torrents
        state.update(state=FOUND, lease=None, found_at=event["at"])
    elif name == "not_found":
        state["not_found"] += 1
        state["last_not_found_at"] = event["at"]
        if state["state"] == LEASED:  # the reporter's hold ends; another holder keeps it
            state["lease"] = without_holders(state["lease"], [event["actor"]])
            if state["lease"] is not None:
                return
        if state["state"] != FOUND:
            state.update(state=READY, queue_group=1, available_at=data["retry_at"], lease=None)


# ---------------------------------------------------------------- import


@dataclasses.dataclass
class ImportSummary:
    """What an import did; rejections keep only the first few, counts are exact."""

    added: int = 0
    already_present: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REJECTIONS_KEPT:
            self.rejections.append({"line": line, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_inventory_csv(stream: IO[str], summary: ImportSummary) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, sort artist, album title) from a CSV text stream.

    Rows that cannot be used are recorded in the summary and skipped; a file
    without the two required columns raises InvalidCsvError before anything is yielded.
    """
    reader = csv.reader(stream)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise InvalidCsvError("The CSV file is empty.") from None
    except csv.Error as exc:
        raise InvalidCsvError(f"The CSV header cannot be read: {exc}") from None
    missing = [c for c in (ARTIST_COLUMN, TITLE_COLUMN) if c not in header]
    if missing:
        raise InvalidCsvError(
            f"The CSV needs the columns {ARTIST_COLUMN!r} and {TITLE_COLUMN!r}; missing: "
            + ", ".join(repr(m) for m in missing),
            columns=header,
        )
    artist_at, title_at = header.index(ARTIST_COLUMN), header.index(TITLE_COLUMN)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            summary.reject(reader.line_num, f"unreadable row: {exc}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) <= max(artist_at, title_at):
            summary.reject(line, "the row has fewer columns than the header")
            continue
        artist, title = row[artist_at].strip(), row[title_at].strip()
        if not artist or not title:
            summary.reject(line, f"empty {ARTIST_COLUMN if not artist else TITLE_COLUMN}")
        elif len(artist) > MAX_FIELD_CHARS or len(title) > MAX_FIELD_CHARS:
            summary.reject(line, f"a field is longer than {MAX_FIELD_CHARS} characters")
        else:
            yield line, artist, title


def open_csv_text(binary: IO[bytes]) -> io.TextIOWrapper:
    """Decode UTF-8 with or without a BOM; a decoding error names the problem."""
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _imported_decision(album_id: int, artist: str, title: str, key: str) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None:
            return None
        return "imported", {"id": album_id, "sortArtist": artist, "album": title, "key": key}

    return decide


def _assign_ids(
    db: Database, rows: list[tuple[int, str, str]], summary: ImportSummary
) -> list[tuple[int, int, str, str, str]]:
    """Give each row its stable id; count rows whose album is already stored.

    The id is a hash of the normalised (artist, title). Should two different
    albums ever hash alike, the later one is salted until its id is free.
    """
    pending = []
    seen: dict[int, str] = {}
    for line, artist, title in rows:
        key = normalize_key(artist) + "\x1f" + normalize_key(title)
        pending.append((line, stable_int_id(key), artist, title, key))
    assigned: list[tuple[int, int, str, str, str]] = []
    for salt in range(1, 6):
        # confirmed against the log: a dead import's phantom is not an album
        stored = confirm_states(db, db.get_many(album_doc_id(p[1]) for p in pending))
        retry = []
        for line, album_id, artist, title, key in pending:
            owner = stored.get(album_doc_id(album_id), {}).get("key") or seen.get(album_id)
            if owner == key:
                summary.already_present += 1
            elif owner is None:
                seen[album_id] = key
                assigned.append((line, album_id, artist, title, key))
            else:
                retry.append((line, stable_int_id(key, str(salt)), artist, title, key))
        if not retry:
            break
        pending = retry
    return assigned


def import_albums(
    db: Database,
    rows: Iterable[tuple[int, str, str]],
    *,
    actor: str,
    now: datetime,
    summary: ImportSummary | None = None,
    batch_size: int = 1000,
) -> ImportSummary:
    """Add albums that are not stored yet, in batches; importing again adds nothing."""
    summary = summary or ImportSummary()
    batch: list[tuple[int, str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            _import_batch(db, batch, actor, now, summary)
            batch = []
    if batch:
        _import_batch(db, batch, actor, now, summary)
    return summary


def _import_batch(
    db: Database,
    batch: list[tuple[int, str, str]],
    actor: str,
    now: datetime,
    summary: ImportSummary,
) -> None:
    assigned = _assign_ids(db, batch, summary)
    decisions = [
        (album_doc_id(album_id), _imported_decision(album_id, artist, title, key))
        for _, album_id, artist, title, key in assigned
    ]
    outcomes = commit(db, decisions, actor=actor, now=now, states={d[0]: {} for d in decisions})
    for outcome in outcomes:
        if outcome.recorded:
            summary.added += 1
        else:
            summary.already_present += 1  # a concurrent import stored it first


# ---------------------------------------------------------------- queue


def public_album(doc: Doc) -> dict[str, Any]:
    """The exact shape the original clients read."""
    return {"album": doc["album"], "id": doc["id"], "sortArtist": doc["sortArtist"]}


def lease_albums(
    leaser: QueueLeaser, holder: str, rows: int, now: datetime, minutes: float
) -> list[dict[str, Any]]:
    """Lease up to `rows` albums that need metadata, never-tried first."""
    docs = leaser.lease(QUEUE, holder, rows, now, timedelta(minutes=minutes), actor=holder)
    return [public_album(doc) for doc in docs]


def submit_metadata(
    db: Database,
    found: dict[int, list[TorrentRef]],
    *,
    holder: str,
    now: datetime,
    retry_minutes: float,
) -> dict[int, dict[str, Any]]:
    """Record what a worker found for each album; return the outcome per album id.

    Accepted even when the worker's lease expired or moved on: a result is a
    fact and is never thrown away. Unknown album ids are reported, not applied.
    """
    found = {album_id: list(dict.fromkeys(refs)) for album_id, refs in found.items()}  # no repeats
    ids = list(found)
    stored = db.get_many(album_doc_id(i) for i in ids)
    results: dict[int, dict[str, Any]] = {}
    decisions: list[tuple[str, Decision]] = []
    retry_at = iso(now + timedelta(minutes=retry_minutes))
    for album_id in ids:
        if album_doc_id(album_id) not in stored:
            results[album_id] = {"error": "unknown_album", "reason": f"No album has id {album_id}."}
            continue
        torrents = found[album_id]
        if torrents:
            data = {"torrents": [{"site": t.host, "torrentId": t.torrent_id} for t in torrents]}
            decisions.append((album_doc_id(album_id), always("torrents_found", data)))
            results[album_id] = {"status": "found", "downloads": []}
        else:
            decisions.append((album_doc_id(album_id), always("not_found", {"retry_at": retry_at})))
            results[album_id] = {"status": "not_found", "retry_at": retry_at}
    found_albums = {i: found[i] for i, r in results.items() if r.get("status") == "found"}
    task_decisions = downloads.creation_decisions(found_albums)
    outcomes = commit(db, decisions + task_decisions, actor=holder, now=now, states=stored)
    check_none_lost(outcomes)
    for album_id, torrents in found_albums.items():
        results[album_id]["downloads"] = [
            downloads.public_task_ref(t.host, t.torrent_id) for t in torrents
        ]
    return results
