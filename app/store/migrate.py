"""`distleech migrate`: move a one-database deployment (events and projections side by side,
before issue 8) to the split layout: the event log, the secrets store and the read model.

Why it is built this way: the old database holds the only copy of every fact,
so nothing is removed until the new log provably holds all of them. Each step
is idempotent and the progress that matters is kept in `_local/migration`, so
a crash at any point (or Ctrl-C) is mended by running the command again:

1. create the log and the secrets databases and sync their design documents;
2. copy the old `ev:<aggregate>:<version>` events, a page at a time, into the
   log as one-change events whose ids derive from the old ids (a rerun meets
   "already there", never a duplicate), without their password hashes; the
   latest hash per user and every active token go to the secrets store;
3. `rebuild --check`: refold every projection from the new log and compare it
   with the stored one (app/store/migrate_check.py); differences only where
   the new layout differs on purpose (`EXPECTED_DIFFERENCES`) are fine, any
   other stops the migration with a report and nothing removed; then rebuild
   rewrites the projections;
4. delete the old validator `_design/events` (it refuses to delete events)
   and the old projector's checkpoint (its seq means nothing to the log);
5. delete the old events, a page at a time, each only once its copy is found
   in the log;
6. sync the read model's design documents, compact, and write `_local/layout`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC

from app.store.couch import CouchError, Database
from app.store.events import EVENT_PREFIX, Doc, event_log, site_of
from app.store.migrate_check import check_against_log, renamed_aggregate
from app.store.setup import LEGACY_VALIDATOR_ID, ensure_database, init_database, is_legacy_layout
from app.timeutil import parse_iso, utcnow

PROGRESS_ID = "_local/migration"
LAYOUT_ID = "_local/layout"
LAYOUT_VERSION = 2
LEGACY_LOCAL_DOCS = ("_local/projector-checkpoint",)  # seqs of the old database's feed
SECRET_FIELDS = ("password_hash",)  # never copied into the immutable log

Echo = Callable[[str], None]
Hook = Callable[[str], None]


class MigrationError(Exception):
    """The migration cannot go on; nothing that is not also in the log was removed."""


@dataclasses.dataclass
class MigrationReport:
    """What one run did; `already_migrated` when it found nothing to do."""

    already_migrated: bool = False
    copied: int = 0  # events written to the log by this run
    already_copied: int = 0  # found there (a rerun after a crash)
    passwords: int = 0
    tokens: int = 0
    projections_rewritten: int = 0
    deleted: int = 0


def migrated_event_id(legacy: Doc, site: str) -> str:
    """The log id of an old event: its time, the site, and a digest of its old id.

    Derived, never random, so copying twice writes the same id twice and the
    second write is refused as "already there" instead of making a duplicate.
    """
    stamp = parse_iso(legacy["at"]).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    digest = hashlib.sha256(legacy["_id"].encode("utf-8")).hexdigest()[:16]
    return f"{EVENT_PREFIX}{stamp}:{site}:{digest}"


def convert_event(legacy: Doc, site: str) -> Doc:
    """One old event as a new one with a single change; secret fields are dropped."""
    for field in ("type", "aggregate", "version", "name", "at", "data"):
        if legacy.get(field) in (None, ""):
            raise MigrationError(f"{legacy['_id']} is not an old event (no {field!r}): stopped")
    data = {k: v for k, v in legacy["data"].items() if k not in SECRET_FIELDS}
    change = {k: legacy[k] for k in ("aggregate", "version", "name")}
    change["aggregate"] = renamed_aggregate(legacy["aggregate"])
    change["data"] = data
    return {
        "_id": migrated_event_id(legacy, site),
        "type": "event",
        "name": legacy["name"],
        "at": legacy["at"],
        "actor": legacy.get("actor") or "legacy",
        "site": site,
        "changes": [change],
    }


def _already_there(error: str | None, reason: str | None) -> bool:
    # CouchDB answers an existing id with a conflict; pouchdb-server runs the
    # log's validator first, which refuses with reason "event_immutable…".
    return error == "conflict" or (
        error == "forbidden" and (reason or "").startswith("event_immutable")
    )


def _legacy_pages(db: Database, page_size: int) -> Iterator[list[Doc]]:
    """Every document of the read model's `ev:` range: all of them are old events (or
    convert_event stops the migration, rather than leave one behind)."""
    page: list[Doc] = []
    for doc in db.iter_prefix(EVENT_PREFIX, page_size=page_size):
        page.append(doc)
        if len(page) >= page_size:
            yield page
            page = []
    if page:
        yield page


class _Secrets:
    """The latest password hash per user and the state of every token, from the old events.

    One aggregate's old events arrive in version order (their ids end in the
    zero-padded version), so the last one seen is the latest.
    """

    def __init__(self) -> None:
        self.users: dict[str, str | None] = {}
        self.tokens: dict[str, tuple[str, str, bool]] = {}

    def note(self, event: Doc) -> None:
        kind, key = event["aggregate"].split(":", 1)
        name, data = event["name"], event["data"]
        if kind == "user":
            removed = name == "removed"
            self.users[key] = None if removed else data.get("password_hash", self.users.get(key))
        elif kind == "token":
            old_name, old_role, _ = self.tokens.get(key, ("", "", False))
            role = data.get("role", old_role)
            self.tokens[key] = (data.get("name", old_name), role, name == "revoked")

    def store(self, db: Database) -> tuple[int, int]:
        """Write them to the secrets store (idempotent); return (passwords, tokens)."""
        from app.accounts import credentials

        passwords = tokens = 0
        for user, password_hash in sorted(self.users.items()):
            if password_hash:
                credentials.set_password_hash(db, user, password_hash)
                passwords += 1
        for token_id, (name, role, revoked) in sorted(self.tokens.items()):
            if not revoked:  # a revoked token is never linked: it can never work again
                public_id = renamed_aggregate(f"token:{token_id}").removeprefix("token:")
                credentials.link_token(db, token_id, public_id, name, role)
                tokens += 1
        return passwords, tokens


def _prepare_databases(db: Database) -> None:
    """Step 1: the log and the secrets store exist, with their design documents."""
    from app.store.designdocs import build_design_docs, sync_design_docs

    for database, role in ((event_log(db), "events"), (db.companion("secrets"), "secrets")):
        ensure_database(database)
        sync_design_docs(database, build_design_docs(database=role))


def _copy_events(
    db: Database, site: str, report: MigrationReport, echo: Echo, hook: Hook, page_size: int
) -> int:
    """Step 2: every old event into the log, then the secrets; return how many old events."""
    log, secrets, seen = event_log(db), _Secrets(), 0
    for page in _legacy_pages(db, page_size):
        converted = [convert_event(doc, site) for doc in page]
        refused = []
        for result in log.bulk_docs(converted):
            if result.ok:
                report.copied += 1
            elif _already_there(result.error, result.reason):
                report.already_copied += 1
            else:
                refused.append(f"{result.id}: {result.error} {result.reason}")
        if refused:
            raise MigrationError("the event log refused: " + "; ".join(refused[:10]))
        for doc in page:
            secrets.note(doc)
        seen += len(page)
        echo(f"  events copied: {seen}")
        hook("copy_page")
    report.passwords, report.tokens = secrets.store(db)
    echo(f"  secrets stored: {report.passwords} password(s), {report.tokens} active token(s)")
    return seen


def _check_and_rebuild(
    db: Database, legacy_events: int, report: MigrationReport, echo: Echo, hook: Hook
) -> None:
    """Step 3: nothing the log cannot reproduce, then the projections rewritten from the log."""
    from app.store.projections import rebuild_projections

    folded, found = check_against_log(db)
    if folded < legacy_events:
        raise MigrationError(f"the log holds {folded} changes, the old database {legacy_events}")
    if found:
        lines = [d.describe() for d in found[:20]]
        more = f"\n  … and {len(found) - 20} more" if len(found) > 20 else ""
        raise MigrationError(
            f"rebuild --check: {len(found)} projection(s) differ from a rebuild from the new "
            "log beyond the expected fields; nothing was removed:\n  " + "\n  ".join(lines) + more
        )
    echo(f"  rebuild --check: {folded} changes reproduce every projection")
    hook("checked")
    written = rebuild_projections(db)
    report.projections_rewritten = written.written
    confirm = rebuild_projections(db, check_only=True)
    if confirm.differing or confirm.without_events:
        raise MigrationError(
            "after the rebuild, projections still differ from the log: "
            + ", ".join((confirm.differing + confirm.without_events)[:20])
        )
    echo(f"  projections rewritten from the log: {report.projections_rewritten}")


def _remove_legacy_bookkeeping(db: Database, echo: Echo) -> None:
    """Step 4: the old validator (it refuses deleting events) and the old checkpoint."""
    for doc_id in (LEGACY_VALIDATOR_ID, *LEGACY_LOCAL_DOCS):
        doc = db.get_or_none(doc_id)
        if doc is not None:
            db.delete(doc_id, doc["_rev"])
            echo(f"  removed {doc_id}")


def _delete_legacy_events(
    db: Database, site: str, report: MigrationReport, echo: Echo, hook: Hook, page_size: int
) -> None:
    """Step 5: delete old events a page at a time, each only after its copy is found in the log."""
    log = event_log(db)
    while True:
        page = next(_legacy_pages(db, page_size), [])
        if not page:
            return
        copies = {doc["_id"]: migrated_event_id(doc, site) for doc in page}
        present = {
            row["key"]
            for row in log.all_docs(copies.values(), include_docs=False)
            if "error" not in row and not (row.get("value") or {}).get("deleted")
        }
        missing = [old for old, new in copies.items() if new not in present]
        if missing:
            raise MigrationError(
                "old events without a copy in the log (not deleted): " + ", ".join(missing[:10])
            )
        doomed = [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in page]
        deleted = sum(1 for r in db.bulk_docs(doomed) if r.ok)
        if not deleted:
            raise MigrationError("old events could not be deleted: " + ", ".join(copies)[:500])
        report.deleted += deleted
        echo(f"  old events deleted: {report.deleted}")
        hook("delete_page")


def _finish(db: Database, site: str, echo: Echo) -> None:
    """Step 6: the read model's design documents, compaction, and the layout marker."""
    init_database(db, warm=False)
    try:
        db.server.request("POST", f"{db.path}/_compact", body={})
        echo("  compaction started")
    except CouchError as exc:  # e.g. an account that may write but not administer
        echo(f"  compaction skipped ({exc.error}): run it as a CouchDB admin")
    marker = db.get_or_none(LAYOUT_ID) or {"_id": LAYOUT_ID}
    marker.update(version=LAYOUT_VERSION, site=site, migrated_at=utcnow().isoformat())
    db.put(marker)


def migrate(
    db: Database,
    *,
    site: str | None = None,
    echo: Echo = lambda _: None,
    hook: Hook = lambda _: None,
    page_size: int = 500,
) -> MigrationReport:
    """Run (or resume) the migration of `db`; see the module docstring for the steps.

    `hook` is called with a step's name after the step (and after every page
    of steps 2 and 5): tests raise from it to crash at that point.
    """
    report = MigrationReport()
    progress = db.get_or_none(PROGRESS_ID)
    if not is_legacy_layout(db) and (progress is None or progress.get("done")):
        report.already_migrated = True
        echo(f"{db.name}: already migrated (or made in the new layout); nothing to do")
        return report
    if progress is None:
        # The site is fixed at the first run: the copies' ids contain it, and a
        # rerun under another site name would copy every event a second time.
        progress = {"_id": PROGRESS_ID, "site": site or site_of(db)}
        db.put(progress)
    site = progress["site"]
    echo(f"migrating {db.name} (site {site}) to the split layout")
    echo("1/6 event log and secrets databases")
    _prepare_databases(db)
    hook("databases")
    if not progress.get("copied"):
        echo("2/6 copying events into the log")
        legacy_events = _copy_events(db, site, report, echo, hook, page_size)
        progress.update(copied=True, legacy_events=legacy_events)
        db.put(progress)
        hook("copy")
    if not progress.get("checked"):
        echo("3/6 rebuild --check")
        _check_and_rebuild(db, progress["legacy_events"], report, echo, hook)
        progress["checked"] = True
        db.put(progress)
        hook("check")
    echo("4/6 removing the old validator")
    _remove_legacy_bookkeeping(db, echo)
    hook("validator")
    echo("5/6 deleting the old events")
    _delete_legacy_events(db, site, report, echo, hook, page_size)
    hook("delete")
    echo("6/6 design documents, compaction, layout marker")
    _finish(db, site, echo)
    progress["done"] = True
    db.put(progress)
    hook("finish")
    echo(
        f"done: {report.copied} events copied ({report.already_copied} were already there), "
        f"{report.deleted} old events removed"
    )
    return report
