"""The source aggregate, `source:<id>`: where a remote gallery is and where its files go.

Events (past tense; `data` as recorded):
- `added` {id, url, content_path, schedule, sync_remote_deletes, enabled}
- `changed` {the fields that changed, among url, content_path, schedule,
  sync_remote_deletes}
- `disabled` {} / `enabled` {}
- `cookies_set` {} / `cookies_removed` {}: only that the cookies changed.
  The cookies themselves are a secret (they log in as someone at the remote
  site): they live in the secrets database (app/sources/cookies.py), never
  in the log or the read model, which replicate or are readable by members.

`schedule` is null, {"cron": "<crontab, UTC>"} or {"interval_seconds": n}.
The projection's `schedule_from` is when the current schedule started to
count (added, schedule changed, enabled): the scheduler's first due time of
a source that never synced is computed from it (app/sources/jobs.py).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from app.errors import InvalidContentPathError, SourceExistsError, SourceNotFoundError
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from metainfo.paths import overlaps

TYPE = "source"
ENABLED, DISABLED = "enabled", "disabled"
CHANGEABLE = ("url", "content_path", "schedule", "sync_remote_deletes")


def source_doc_id(source_id: str) -> str:
    """The aggregate id of a source: `source:<id>`."""
    return f"{TYPE}:{source_id}"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A checked new source (app/sources/checks.py checked every field)."""

    id: str
    url: str
    content_path: str
    schedule: dict[str, Any] | None = None
    sync_remote_deletes: bool = False
    enabled: bool = True


# ---------------------------------------------------------------- projection


def apply_source_event(state: Doc, event: Doc) -> None:
    """Project one source event (see the module docstring)."""
    name, data = event["name"], event["data"]
    if name == "added" and "id" not in state:  # two sites adding it while apart: the first
        state.update(data, added_at=event["at"], schedule_from=event["at"], has_cookies=False)
        state["state"] = ENABLED if data["enabled"] else DISABLED
    elif name == "changed":
        state.update(data)
        if "schedule" in data:
            state["schedule_from"] = event["at"]
    elif name == "disabled":
        state.update(enabled=False, state=DISABLED)
    elif name == "enabled":
        if not state.get("enabled"):
            state["schedule_from"] = event["at"]  # no burst of syncs missed while disabled
        state.update(enabled=True, state=ENABLED)
    elif name == "cookies_set":
        state["has_cookies"] = True
    elif name == "cookies_removed":
        state["has_cookies"] = False


def public_source(doc: Doc) -> dict[str, Any]:
    """A source as the API and the CLI show it (never its cookies: only whether it has some)."""
    return {
        "id": doc["id"],
        "url": doc["url"],
        "content_path": doc["content_path"],
        "schedule": doc.get("schedule"),
        "sync_remote_deletes": doc.get("sync_remote_deletes", False),
        "enabled": doc.get("enabled", True),
        "has_cookies": doc.get("has_cookies", False),
        "added_at": doc.get("added_at"),
        "updated_at": doc.get("updated_at"),
    }


# ---------------------------------------------------------------- commands


def add_source(db: Database, spec: SourceSpec, *, actor: str, now: datetime) -> Doc:
    """Record a new source; raise SourceExistsError when the id is taken.

    Raises InvalidContentPathError when its content path overlaps another source's.
    """
    check_content_path_free(db, spec.id, spec.content_path)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state is not None else ("added", dataclasses.asdict(spec))

    [outcome] = commit(db, [(source_doc_id(spec.id), decide)], actor=actor, now=now)
    if not outcome.recorded or outcome.state is None:
        raise SourceExistsError(f"A source with id {spec.id!r} exists already.", id=spec.id)
    return outcome.state


def get_source(db: Database, source_id: str) -> Doc:
    """The source's projection; raise SourceNotFoundError when there is none."""
    doc = db.get_or_none(source_doc_id(source_id))
    if doc is None or doc.get("type") != TYPE:
        raise SourceNotFoundError(f"No source has id {source_id!r}.", id=source_id)
    return doc


def list_sources(db: Database) -> list[Doc]:
    """Every source, by id: one _all_docs range (ids are `source:<id>`), no view needed."""
    return [doc for doc in db.iter_prefix(f"{TYPE}:") if doc.get("type") == TYPE]


def check_content_path_free(db: Database, source_id: str, content_path: str) -> None:
    """Refuse a content path equal to, inside or around another source's ("a" vs "a/b").

    Two sources in one directory would see each other's files: a sync that
    mirrors remote deletions could delete the other's, and its files would
    be recorded twice. Disabled sources count too (their files are there).
    Checked on a read of every source, not under a lock: two admins adding
    overlapping paths at the same instant are not caught, one admin is.
    """
    for other in list_sources(db):
        if other["id"] != source_id and overlaps(other["content_path"], content_path):
            raise InvalidContentPathError(
                f"content_path {content_path!r} overlaps source {other['id']!r}'s"
                f" {other['content_path']!r}; sources need directories of their own.",
                source=other["id"],
            )


def changed_decision(fields: dict[str, Any]) -> Decision:
    """Record the fields that differ from the state; nothing when none does."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        changed = {k: v for k, v in fields.items() if k in CHANGEABLE and state.get(k) != v}
        return ("changed", changed) if changed else None

    return decide


def change_source(
    db: Database, source_id: str, fields: dict[str, Any], *, actor: str, now: datetime
) -> tuple[Doc, bool]:
    """Change checked fields of a source; return (its state, whether anything changed).

    Raises InvalidContentPathError when a new content path overlaps another source's.
    """
    if "content_path" in fields:
        check_content_path_free(db, source_id, fields["content_path"])
    [outcome] = commit(
        db, [(source_doc_id(source_id), changed_decision(fields))], actor=actor, now=now
    )
    if outcome.state is None:
        raise SourceNotFoundError(f"No source has id {source_id!r}.", id=source_id)
    return outcome.state, outcome.recorded


def enabled_decision(enabled: bool) -> Decision:
    """Record `enabled` or `disabled` when the source is not so already."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or bool(state.get("enabled")) == enabled:
            return None
        return ("enabled" if enabled else "disabled"), {}

    return decide


def cookies_decision(present: bool) -> Decision:
    """Record that the source's cookies were set or removed (when that changes anything)."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        return ("cookies_set" if present else "cookies_removed"), {}

    return decide


def record_cookies_change(
    db: Database, source_id: str, present: bool, *, actor: str, now: datetime
) -> Doc:
    """Record that the cookies were replaced or removed (the secret is stored already)."""
    [outcome] = commit(
        db, [(source_doc_id(source_id), cookies_decision(present))], actor=actor, now=now
    )
    if outcome.state is None:
        raise SourceNotFoundError(f"No source has id {source_id!r}.", id=source_id)
    return outcome.state
