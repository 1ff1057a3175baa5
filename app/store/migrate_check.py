"""`distleech migrate`, step 3: check that the new log reproduces every stored projection.

Also how old aggregate ids are named in the new log (renamed_aggregate), which
both the copy (app/store/migrate.py) and the check need.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from app.store.couch import Database
from app.store.events import Doc, project

# Fields a rebuilt projection may lack or change on purpose, by aggregate type
# ("*": every type): the log has no password hashes (they moved to the secrets
# store) and projections now name the event that last changed them.
EXPECTED_DIFFERENCES: dict[str, frozenset[str]] = {
    "*": frozenset({"last_event"}),
    "user": frozenset({"password_hash"}),
}


@dataclasses.dataclass
class Difference:
    """A projection the new log would not reproduce: why, and the fields concerned."""

    aggregate: str
    fields: dict[str, tuple[Any, Any]]  # field -> (stored, rebuilt)

    def describe(self) -> str:
        if not self.fields:
            return f"{self.aggregate}: stored, but no change in the log accounts for it"
        parts = [f"{k}: stored {s!r:.80} rebuilt {r!r:.80}" for k, (s, r) in self.fields.items()]
        return f"{self.aggregate}: " + "; ".join(parts)


_LEGACY_TOKEN = re.compile(r"^token:[0-9a-f]{64}$")


def renamed_aggregate(aggregate: str) -> str:
    """The aggregate id an old one has in the new log.

    Old tokens were named after the SHA-256 of the secret (`token:<64 hex>`);
    in the new layout a token's id must say nothing of its secret, so it gets
    a public id derived one way from the old one (deterministic, so that a
    resumed migration names it alike). Every other id stays.
    """
    if not _LEGACY_TOKEN.match(aggregate):
        return aggregate
    digest = hashlib.sha256(("distleech-token-id:" + aggregate[6:]).encode()).hexdigest()
    return "token:" + digest[:16]


def _differences(stored: Doc | None, rebuilt: Doc | None) -> dict[str, tuple[Any, Any]] | None:
    """The fields that differ beyond what the new layout changes on purpose (None: none).

    A stored projection behind its events (the old write path could crash
    between the event and the projection) is no loss: the log has the events
    and the rebuild brings the projection up to date.
    """
    if rebuilt is None:
        return None if stored is None else {}
    if stored is None or stored.get("version", 0) < rebuilt.get("version", 0):
        return None
    allowed = EXPECTED_DIFFERENCES["*"] | EXPECTED_DIFFERENCES.get(stored.get("type", ""), set())
    missing = object()
    fields = {}
    for key in sorted((set(stored) | set(rebuilt)) - {"_rev"} - allowed):
        old, new = stored.get(key, missing), rebuilt.get(key, missing)
        if old != new:
            fields[key] = (None if old is missing else old, None if new is missing else new)
    return fields or None


def check_against_log(db: Database, *, batch: int = 500) -> tuple[int, list[Difference]]:
    """Refold every projection from the log; return (changes folded, unexpected differences)."""
    from app.store.events import projected_types
    from app.store.projections import iter_change_streams

    found: list[Difference] = []
    in_log: set[str] = set()
    folded = 0
    chunk: list[tuple[str, Doc | None]] = []

    # old token projections are compared with their renamed rebuild
    renamed = {renamed_aggregate(i): i for i in db.iter_ids("token:") if _LEGACY_TOKEN.match(i)}

    def compare(items: list[tuple[str, Doc | None]]) -> None:
        stored = db.get_many(renamed.get(agg, agg) for agg, _ in items)
        for agg, rebuilt in items:
            old = stored.get(renamed.get(agg, agg))
            fields = _differences(None if old is None else dict(old, _id=agg), rebuilt)
            if fields is not None:
                found.append(Difference(agg, fields))

    for agg, changes in iter_change_streams(db):
        in_log.add(agg)
        folded += len(changes)
        chunk.append((agg, project(changes)))
        if len(chunk) >= batch:
            compare(chunk)
            chunk = []
    compare(chunk)
    for type_name in sorted(projected_types()):
        found += [
            Difference(i, {})
            for i in db.iter_ids(f"{type_name}:")
            if i not in in_log and renamed_aggregate(i) not in in_log
        ]
    return folded, found
