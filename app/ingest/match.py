"""Ingest matching: which registered torrents each listing of a batch holds (nothing is written).

Candidates come from two keyed view reads for the whole batch, never a scan:
matching/by_file with every listing's [normalised path, size] keys (every
torrent that could match has at least one file among them) and
matching/by_top_dir with every listing's own name (so that a same-named
torrent that does not match is reported with its reasons); then one read of
the candidate documents by id. A torrent matches a listing when every one of
its files is present with the same size; extra files are allowed. A
verification the scanner sends along can only take a match away: data that
fails its piece hashes is not the torrent's.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from app.ingest.parse import FAILED, FILE, ListedFile, Listing
from app.registry.keys import normalize_dir
from app.store.couch import Database
from app.store.events import Doc
from metainfo.names import normalize_path

MAX_CANDIDATES = 20  # torrents evaluated per listing, most shared files first
KEYS_PER_READ = 1000

FileKey = tuple[str, int]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _file_keys(listing: Listing) -> list[FileKey]:
    return list(dict.fromkeys((normalize_path(f.path), f.size) for f in listing.files))


def _read_by_top_dir(
    db: Database, names: list[str], fresh: dict[str, str]
) -> tuple[dict[str, dict[str, Doc]], dict[str, Doc]]:
    """Same-named torrents by normalised name, and the states of their linked tasks."""
    named: dict[str, dict[str, Doc]] = collections.defaultdict(dict)
    tasks: dict[str, Doc] = {}
    for chunk in _chunks(names, KEYS_PER_READ):
        rows = db.view("matching", "by_top_dir", keys=chunk, include_docs=True, **fresh)
        for row in rows:
            value = row.get("value")
            if isinstance(value, dict) and "_id" in value:  # a linked download task
                tasks[value["_id"]] = row.get("doc") or {}
            elif row.get("doc"):
                named[row["key"]][row["id"]] = row["doc"]
    return named, tasks


def _read_by_file(
    db: Database, keys: list[FileKey], fresh: dict[str, str]
) -> dict[FileKey, list[str]]:
    """The ids of the torrents having each [path, size] key (once per file that has it)."""
    ids: dict[FileKey, list[str]] = collections.defaultdict(list)
    for chunk in _chunks([list(k) for k in keys], KEYS_PER_READ):
        for row in db.view("matching", "by_file", keys=chunk, **fresh):
            path, size = row["key"]
            ids[(path, size)].append(row["id"])
    return ids


def find_candidates(
    db: Database, listings: Sequence[Listing], *, stale: bool = False
) -> tuple[list[list[Doc]], dict[str, Doc]]:
    """Each listing's candidate torrents, and the states of download tasks read on the way.

    Same-named torrents come with their tasks' states in the same read
    (by_top_dir links them); torrents sharing [path, size] keys are read by
    id, at most MAX_CANDIDATES per listing, those sharing the most files
    first (a torrent that matches shares all of its files). A task known not
    to exist maps to {}. With `stale`, the views answer from their index as
    it is, without updating it. Three requests however many listings.
    """
    fresh = {"stale": "ok"} if stale else {}
    names = [normalize_dir(listing.name) for listing in listings]
    keys = [_file_keys(listing) for listing in listings]
    named, tasks = _read_by_top_dir(db, list(dict.fromkeys(names)), fresh)
    by_key = _read_by_file(db, list(dict.fromkeys(k for each in keys for k in each)), fresh)
    rankings = []
    for name, own_keys in zip(names, keys, strict=True):
        shared = collections.Counter(doc_id for key in own_keys for doc_id in by_key.get(key, ()))
        ranked = [doc_id for doc_id, _ in shared.most_common(MAX_CANDIDATES)]
        same_named = [d for d in named.get(name, {}) if d not in shared]
        ranked += same_named[: MAX_CANDIDATES - len(ranked)]
        rankings.append(ranked)
    docs = {doc_id: doc for same in named.values() for doc_id, doc in same.items()}
    docs |= db.get_many(dict.fromkeys(d for ranked in rankings for d in ranked if d not in docs))
    return [[docs[d] for d in ranked if d in docs] for ranked in rankings], tasks


@dataclasses.dataclass
class Evaluation:
    """How one candidate torrent compares with the listing."""

    doc: Doc
    reasons: list[dict[str, Any]]  # what is missing or of the wrong size
    local_files: list[str]  # the listing's path of each torrent file, in torrent order
    verification: dict[str, Any] | None = None

    @property
    def info_hash(self) -> str:
        return str(self.doc["info_hash"])

    @property
    def fits(self) -> bool:
        """Every file present with the same size (before any verification)."""
        return not self.reasons

    @property
    def matched(self) -> bool:
        return self.fits and (self.verification or {}).get("status") != FAILED

    def all_reasons(self) -> list[dict[str, Any]]:
        """Why it did not match: the files, or else the verification that failed."""
        if self.fits and not self.matched:
            return [{"problem": "verification_failed", **(self.verification or {})}]
        return self.reasons


def index_listing(listing: Listing) -> dict[str, list[ListedFile]]:
    """The listing's files by normalised path (two files may fold to one key)."""
    index: dict[str, list[ListedFile]] = collections.defaultdict(list)
    for listed in listing.files:
        index[normalize_path(listed.path)].append(listed)
    return index


def evaluate(doc: Doc, listing: Listing, index: dict[str, list[ListedFile]]) -> Evaluation:
    """Compare a torrent's files with the listing: each must be there with its size."""
    reasons: list[dict[str, Any]] = []
    local: list[str] = []
    if listing.kind == FILE and not doc.get("single_file"):
        reasons.append({"problem": "expects_directory"})
    for torrent_file in doc.get("files") or []:
        if torrent_file.get("pad"):
            local.append(torrent_file["path"])
            continue
        present = index.get(torrent_file["key"], [])
        same = [f for f in present if f.size == torrent_file["size"]]
        if same:
            local.append(same[0].path)
        elif present:
            reasons.append(_wrong_size(torrent_file, present[0]))
        else:
            reasons.append({"problem": "missing", "file": torrent_file["path"]})
    if not doc.get("files"):
        reasons.append({"problem": "no_files_known"})
    return Evaluation(doc, reasons, local, listing.verified.get(doc["info_hash"]))


def _wrong_size(torrent_file: Doc, found: ListedFile) -> dict[str, Any]:
    return {
        "problem": "wrong_size",
        "file": torrent_file["path"],
        "expected": torrent_file["size"],
        "found": found.size,
    }


def match_listings(
    db: Database, listings: Sequence[Listing]
) -> tuple[list[list[Evaluation]], dict[str, Doc]]:
    """Evaluate every candidate of every listing (nothing is written); also the task states read.

    The views are read stale first (stale=ok). Every recorded match rewrites a
    torrent projection, which the torrents views index; bringing the index up
    to date on each read would cost more than the look-ups, while the next
    fresh read indexes the whole backlog at once for a fraction of that. Keys
    change only when a torrent is registered, and documents are read fresh,
    so a stale index could only hide a torrent registered since the last fresh
    read; but registering a torrent refreshes the matching index before it is
    answered (app/registry/register.py refresh_matching_index), so a stale read sees
    every torrent whose registration finished. The listings of the batch that
    match nothing are read again all the same, all together, up to date before
    "no match" is said (a registration still in flight).
    """
    indexes = [index_listing(listing) for listing in listings]
    evaluations: list[list[Evaluation]] = [[] for _ in listings]
    tasks: dict[str, Doc] = {}
    pending = list(range(len(listings)))
    for stale in (True, False):
        found, read = find_candidates(db, [listings[i] for i in pending], stale=stale)
        tasks.update(read)
        for i, candidates in zip(pending, found, strict=True):
            evaluations[i] = [evaluate(doc, listings[i], indexes[i]) for doc in candidates]
        pending = [i for i in pending if not any(ev.matched for ev in evaluations[i])]
        if not pending:
            break
    return evaluations, tasks
