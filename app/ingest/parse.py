"""Ingest listings: what the scanner sends for one directory (or loose file), and batches of them.

A listing is checked against LISTING_SCHEMA and the path rules before
anything is read or written. A batch `{"listings": [<listing>, …]}` is
checked whole: one bad listing, or more than the batch caps allow, refuses the
whole batch (400, nothing changes), naming the first bad listing's index.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema

from app.errors import BatchTooLargeError, InvalidListingError

DIRECTORY, FILE = "directory", "file"
VERIFIED, FAILED, NOT_VERIFIABLE = "verified", "failed", "not_verifiable"
MAX_LISTING_FILES = 100_000
MAX_PATH_CHARS = 4096
# A batch costs one set of reads and one commit. Its caps keep one request no
# larger than the largest single listing (in files) and its report short.
MAX_BATCH_LISTINGS = 100
MAX_BATCH_FILES = MAX_LISTING_FILES

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


def is_batch(body: Any) -> bool:
    """A batch is an object with `listings`; a single listing never has that field."""
    return isinstance(body, dict) and "listings" in body


def parse_batch(body: dict[str, Any]) -> list[Listing]:
    """Check a whole batch `{"listings": [...]}`; raise on the first problem, so nothing runs.

    Raises BatchTooLargeError over MAX_BATCH_LISTINGS listings or
    MAX_BATCH_FILES files in all, InvalidListingError (details.index) otherwise.
    """
    raw = body["listings"]
    if body.keys() != {"listings"}:
        raise InvalidListingError('A batch is {"listings": [<listing>, ...]} and nothing else.')
    if not isinstance(raw, list) or not raw:
        raise InvalidListingError("listings must be a non-empty array of listings.")
    if len(raw) > MAX_BATCH_LISTINGS:
        raise BatchTooLargeError(
            f"A batch carries at most {MAX_BATCH_LISTINGS} listings, not {len(raw)}.",
            listings=len(raw),
            max_listings=MAX_BATCH_LISTINGS,
        )
    files = sum(len(item["files"]) for item in raw if _has_file_list(item))
    if files > MAX_BATCH_FILES:
        raise BatchTooLargeError(
            f"A batch carries at most {MAX_BATCH_FILES} files in all, not {files}.",
            files=files,
            max_files=MAX_BATCH_FILES,
        )
    listings = []
    for index, item in enumerate(raw):
        try:
            listings.append(parse_listing(item))
        except InvalidListingError as exc:
            raise InvalidListingError(f"listings/{index}: {exc.reason}", index=index) from None
    return listings


def _has_file_list(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("files"), list)
