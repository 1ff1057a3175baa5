"""Ingest matching: which registered torrents a directory (or loose file) on disk holds.

The scanner sends one listing per top-level directory or loose file: relative
paths and sizes. Candidates come from two keyed view reads, never a scan:
torrents/by_file with the listing's [normalised path, size] keys (every
torrent that could match has at least one file among them) and
torrents/by_top_dir with the directory's own name (so that a same-named
torrent that does not match is reported with its reasons).

A torrent matches when every one of its files is present with the same size;
extra files are allowed and reported. (The original client looked at the last
file's size only.) A verification the scanner sends along can only take a
match away: data that fails its piece hashes is not the torrent's. Every match
is recorded: the torrent is `located` at the listing's path, and each of its
download tasks is `filled` with that path. Recording again what is already
recorded writes nothing, so re-scanning a volume changes nothing, and a
directory found at a new path records the move.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import jsonschema

from app import downloads
from app.couch import Database
from app.events import Decision, Doc, Outcome, check_none_lost, commit
from app.timeutil import iso
from app.torrents import (
    InvalidListingError,
    normalize_dir,
    normalize_path,
    torrent_doc_id,
)

DIRECTORY, FILE = "directory", "file"
VERIFIED, FAILED, NOT_VERIFIABLE = "verified", "failed", "not_verifiable"
MATCHED, NO_MATCH, SEVERAL_MATCHED = "matched", "no_match", "several_matched"
MAX_LISTING_FILES = 100_000
MAX_PATH_CHARS = 4096
MAX_CANDIDATES = 20  # torrents evaluated per listing, most shared files first
MAX_REASONS = 20
MAX_REPORTED = 20
KEYS_PER_READ = 1000

_VERIFICATION_SCHEMA = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": [VERIFIED, FAILED, NOT_VERIFIABLE]},
        "piece": {"type": "integer", "minimum": 0},
        "pieces": {"type": "integer", "minimum": 0},
        "reason": {"type": "string", "maxLength": 1000},
    },
    "additionalProperties": False,
    "if": {"properties": {"status": {"const": FAILED}}},
    "then": {"required": ["status", "piece"]},
}
LISTING_SCHEMA = {
    "type": "object",
    "required": ["path", "files"],
    "properties": {
        "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS, "pattern": "^/"},
        "kind": {"enum": [DIRECTORY, FILE]},
        "files": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_LISTING_FILES,
            "items": {
                "type": "object",
                "required": ["path", "size"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS},
                    "size": {"type": "integer", "minimum": 0},
                },
                "additionalProperties": False,
            },
        },
        "verified": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9a-fA-F]{40}$"},
            "additionalProperties": _VERIFICATION_SCHEMA,
        },
        "dry_run": {"type": "boolean"},
    },
    "additionalProperties": False,
}
LISTING_VALIDATOR = jsonschema.Draft202012Validator(LISTING_SCHEMA)


@dataclasses.dataclass(frozen=True)
class ListedFile:
    path: str  # relative to the listing's path, '/'-separated, as on disk
    size: int


@dataclasses.dataclass(frozen=True)
class Listing:
    """One directory (or loose file) of an ingest volume, as the scanner saw it."""

    path: str
    kind: str
    files: tuple[ListedFile, ...]
    verified: dict[str, dict[str, Any]]
    dry_run: bool = False

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]


def is_plainly_valid(body: Any) -> bool:
    """A fast check that accepts only listings LISTING_SCHEMA surely accepts.

    jsonschema costs about 2 ms on a listing of a dozen files, as much as a
    view look-up; the common listing passes this instead, and anything else
    (a verification, or something wrong) goes to jsonschema, the authority.
    """
    if not isinstance(body, dict) or not {"path", "files"} <= body.keys() <= _PLAIN_KEYS:
        return False
    path, files = body["path"], body["files"]
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH_CHARS:
        return False
    if body.get("kind", DIRECTORY) not in (DIRECTORY, FILE):
        return False
    if not isinstance(body.get("dry_run", False), bool) or not isinstance(files, list):
        return False
    return 0 < len(files) <= MAX_LISTING_FILES and all(_plain_file(f) for f in files)


_PLAIN_KEYS = {"path", "kind", "files", "dry_run"}


def _plain_file(item: Any) -> bool:
    if not isinstance(item, dict) or item.keys() != {"path", "size"}:
        return False
    path, size = item["path"], item["size"]
    return (
        isinstance(path, str)
        and 0 < len(path) <= MAX_PATH_CHARS
        and type(size) is int  # not bool
        and size >= 0
    )


def parse_listing(body: Any) -> Listing:
    """Check a listing against LISTING_SCHEMA and the path rules; raise InvalidListingError."""
    error = None
    if not is_plainly_valid(body):
        error = jsonschema.exceptions.best_match(LISTING_VALIDATOR.iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        raise InvalidListingError(f"The listing is not valid at {where}: {error.message}")
    path = body["path"].rstrip("/") or "/"
    files = tuple(ListedFile(_check_relative(f["path"]), f["size"]) for f in body["files"])
    if len({f.path for f in files}) != len(files):
        raise InvalidListingError("The listing names one file twice.")
    listing = Listing(
        path=path,
        kind=body.get("kind", DIRECTORY),
        files=files,
        verified={ih.lower(): v for ih, v in (body.get("verified") or {}).items()},
        dry_run=bool(body.get("dry_run", False)),
    )
    if listing.kind == FILE and (len(files) != 1 or files[0].path != listing.name):
        raise InvalidListingError("A loose file's listing has one file: its own name.")
    return listing


def _check_relative(path: str) -> str:
    """A file path relative to the listing: no leading '/', no '..', no empty parts."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise InvalidListingError(
            f"File paths are relative, '/'-separated, without '.' or '..' parts: {path[:200]!r}."
        )
    return path


# ---------------------------------------------------------------- candidates


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def find_candidates(
    db: Database, listing: Listing, *, stale: bool = False
) -> tuple[list[Doc], dict[str, Doc]]:
    """The torrents this listing may hold, and the states of their download tasks read so far.

    Same-named torrents come with their tasks' states in one read (by_top_dir
    links them); torrents sharing [path, size] keys are read by id, at most
    MAX_CANDIDATES, those sharing the most files first (a torrent that matches
    shares all of its files). A task known not to exist maps to {}. With
    `stale`, the views answer from their index as it is, without updating it.
    """
    named: dict[str, Doc] = {}
    tasks: dict[str, Doc] = {}
    key = normalize_dir(listing.name)
    fresh = {"stale": "ok"} if stale else {}
    for row in db.view("torrents", "by_top_dir", key=key, include_docs=True, **fresh):
        value = row.get("value")
        if isinstance(value, dict) and "_id" in value:  # a linked download task
            tasks[value["_id"]] = row.get("doc") or {}
        elif row.get("doc"):
            named[row["id"]] = row["doc"]
    keys = list(dict.fromkeys((normalize_path(f.path), f.size) for f in listing.files))
    shared: collections.Counter[str] = collections.Counter()
    for chunk in _chunks([list(k) for k in keys], KEYS_PER_READ):
        shared.update(row["id"] for row in db.view("torrents", "by_file", keys=chunk, **fresh))
    ranked = [doc_id for doc_id, _ in shared.most_common(MAX_CANDIDATES)]
    ranked += [doc_id for doc_id in named if doc_id not in shared][: MAX_CANDIDATES - len(ranked)]
    docs = named | db.get_many([doc_id for doc_id in ranked if doc_id not in named])
    return [docs[doc_id] for doc_id in ranked if doc_id in docs], tasks


# ---------------------------------------------------------------- evaluation


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


def match_listing(db: Database, listing: Listing) -> tuple[list[Evaluation], dict[str, Doc]]:
    """Evaluate every candidate of a listing (nothing is written); also the task states read.

    The views are read stale first (stale=ok). Every recorded match rewrites a
    torrent projection, which the torrents views index; bringing the index up
    to date on each listing's read would cost more than the look-ups, while
    the next fresh read indexes the whole backlog at once for a fraction of
    that. Keys change only when a torrent is registered, and documents are
    read fresh, so a stale index can only hide a torrent registered since the
    last fresh read: when nothing matches, the views are read again up to
    date before "no match" is said. (A second torrent that matches too but was
    registered since then waits for a later scan.)
    """
    index = index_listing(listing)
    for stale in (True, False):
        candidates, tasks = find_candidates(db, listing, stale=stale)
        evaluations = [evaluate(doc, listing, index) for doc in candidates]
        if any(ev.matched for ev in evaluations):
            break
    return evaluations, tasks


# ---------------------------------------------------------------- decisions


def _files_map(evaluation: Evaluation) -> list[str] | None:
    """The listing's names of the torrent's files, only where any differs from the torrent's."""
    own = [f["path"] for f in evaluation.doc["files"]]
    return None if evaluation.local_files == own else evaluation.local_files


def located_decision(
    listing: Listing, files: list[str] | None, verification: dict[str, Any] | None, now: datetime
) -> Decision:
    """Record where a torrent's files live, unless that (and its verification) is known.

    A new path starts unverified unless this listing carries a verification;
    the same path keeps the verification it had.
    """

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        current = state.get("location") or {}
        place = (listing.path, listing.kind, files)
        same = (current.get("path"), current.get("kind"), current.get("files")) == place
        if same and (verification is None or current.get("verified") == verification):
            return None
        data: dict[str, Any] = {"path": listing.path, "kind": listing.kind}
        if files is not None:
            data["files"] = files
        data["verified"] = verification
        data["verified_at"] = iso(now) if verification is not None else None
        return "located", data

    return decide


def verification_failed_decision(listing: Listing, verification: dict[str, Any]) -> Decision:
    """Record that the data at this path fails the torrent's piece hashes (once per piece)."""
    data = {"path": listing.path, **verification}
    data.pop("status", None)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        last = state.get("last_failed_verification") or {}
        location = state.get("location") or {}
        known = (last.get("path"), last.get("piece")) == (listing.path, data["piece"])
        shown = (
            location.get("path") != listing.path
            or (location.get("verified") or {}).get("status") == FAILED
        )
        return None if known and shown else ("verification_failed", data)

    return decide


def _decisions(
    listing: Listing, evaluations: list[Evaluation], now: datetime
) -> tuple[list[tuple[str, Decision]], dict[str, tuple[str, int]]]:
    """The decisions a listing leads to, and the site ref of each download task in them."""
    decisions: list[tuple[str, Decision]] = []
    tasks: dict[str, tuple[str, int]] = {}
    for ev in evaluations:
        doc_id = torrent_doc_id(ev.info_hash)
        if ev.matched:
            files = _files_map(ev)
            decisions.append((doc_id, located_decision(listing, files, ev.verification, now)))
            for site in ev.doc["sites"]:
                task_id = downloads.task_doc_id(site["site"], site["torrentId"])
                if task_id not in tasks:
                    tasks[task_id] = (site["site"], site["torrentId"])
                    decisions.append((task_id, downloads.fill_decision(listing.path, ev.info_hash)))
        elif ev.fits and ev.verification is not None:
            decisions.append((doc_id, verification_failed_decision(listing, ev.verification)))
    return decisions, tasks


# ---------------------------------------------------------------- ingest


def ingest_listing(db: Database, listing: Listing, *, actor: str, now: datetime) -> dict[str, Any]:
    """Match a listing and record every match (unless it is a dry run); return the report."""
    evaluations, task_states = match_listing(db, listing)
    decisions, tasks = _decisions(listing, evaluations, now)
    states = {torrent_doc_id(ev.info_hash): ev.doc for ev in evaluations}
    states.update((task_id, task_states[task_id]) for task_id in tasks if task_id in task_states)
    if listing.dry_run:
        states.update(db.get_many(task_id for task_id in tasks if task_id not in states))
        results = {agg: _dry_outcome(agg, decide, states) for agg, decide in decisions}
    else:
        outcomes = commit(db, decisions, actor=actor, now=now, states=states)
        check_none_lost(outcomes)
        results = {o.aggregate: o for o in outcomes}
    return _report(listing, evaluations, results, tasks)


def _dry_outcome(aggregate: str, decide: Decision, states: dict[str, Doc]) -> Outcome:
    """What a decision would do, as an Outcome with no event written."""
    state = states.get(aggregate) or None  # {}: a task known not to exist
    return Outcome(aggregate, decide(state) is not None, state)


def _report(
    listing: Listing,
    evaluations: list[Evaluation],
    results: dict[str, Outcome],
    tasks: dict[str, tuple[str, int]],
) -> dict[str, Any]:
    matched = [ev for ev in evaluations if ev.matched]
    outcome = {0: NO_MATCH, 1: MATCHED}.get(len(matched), SEVERAL_MATCHED)
    # Extra files are those no matching torrent claims (none are extra without a match).
    claimed = {path for ev in matched for path in ev.local_files}
    extra = [f.path for f in listing.files if f.path not in claimed] if matched else []
    return {
        "path": listing.path,
        "kind": listing.kind,
        "outcome": outcome,
        "reason": _outcome_reason(outcome, evaluations, len(matched)),
        "dry_run": listing.dry_run,
        "matched": [_matched_entry(ev, results, tasks, listing.dry_run) for ev in matched],
        "rejected": [_rejected_entry(ev) for ev in evaluations if not ev.matched][:MAX_REPORTED],
        "extra_files": {"count": len(extra), "paths": extra[:MAX_REPORTED]},
    }


def _outcome_reason(outcome: str, evaluations: list[Evaluation], matches: int) -> str:
    if outcome == MATCHED:
        return "One torrent has every one of its files here, with the same sizes."
    if outcome == SEVERAL_MATCHED:
        return f"{matches} torrents have every one of their files here; each is recorded."
    if not evaluations:
        return "No registered torrent shares a file (name and size) or the name with this."
    return f"{len(evaluations)} candidate torrent(s) did not match: see rejected."


def _torrent_summary(doc: Doc) -> dict[str, Any]:
    return {
        "info_hash": doc["info_hash"],
        "name": doc["name"],
        "title": doc["title"],
        "sites": [{"site": s["site"], "torrentId": s["torrentId"]} for s in doc["sites"]],
        "has_torrent_file": doc["has_torrent_file"],
        "unavailable": bool(doc.get("unavailable")),
    }


def _matched_entry(
    ev: Evaluation, results: dict[str, Outcome], tasks: dict[str, tuple[str, int]], dry: bool
) -> dict[str, Any]:
    torrent = results[torrent_doc_id(ev.info_hash)]
    entry = _torrent_summary(ev.doc)
    entry["location"] = (
        "unchanged" if not torrent.recorded else "would_record" if dry else "recorded"
    )
    entry["verified"] = ev.verification
    entry["tasks"] = []
    for site in ev.doc["sites"]:
        task_id = downloads.task_doc_id(site["site"], site["torrentId"])
        if task_id in tasks:
            entry["tasks"].append(_task_entry(site, results[task_id], ev.info_hash, dry))
    return entry


def _task_entry(site: Doc, outcome: Outcome, info_hash: str, dry: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": site["site"], "torrentId": site["torrentId"]}
    state = outcome.state
    if state is None:
        entry["status"] = "no_task"
    elif outcome.recorded:
        entry["status"] = "would_fill" if dry else "filled"
    elif state.get("state") == downloads.CANCELLED:
        entry["status"] = "cancelled"
    else:
        entry["status"] = "already_filled"
    return entry


def _rejected_entry(ev: Evaluation) -> dict[str, Any]:
    entry = _torrent_summary(ev.doc)
    counts = collections.Counter(r["problem"] for r in ev.reasons)
    entry.update(
        missing=counts["missing"],
        wrong_size=counts["wrong_size"],
        reasons=ev.all_reasons()[:MAX_REASONS],
    )
    return entry
