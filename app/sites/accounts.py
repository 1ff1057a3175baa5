"""Accounts at every site: the secrets database replicates beside the event log.

Users, tokens and their revocations are events, so they reach every site
with the log; what lets someone log in is the current password hash or
token look-up in the secrets database (app/accounts/credentials.py), which
must never enter the immutable log. So each flow that replicates the log
with a site also replicates the secrets database, in the same direction,
when the link has `accounts: true` (the default). Only current documents
travel; a replaced hash is compacted away at the target as it is locally.

A password changed at two sites while apart leaves a conflict in the
secrets database. CouchDB picks the same winning revision at every site;
the target of each replication deletes the losing revisions of the
documents it just received and compacts, so no old hash stays behind at
any site. The user whose change lost logs in with the winning password (the
log records both changes, with their times and actors).
"""

from __future__ import annotations

import logging
from typing import Any

from app.accounts.credentials import compact_database
from app.sites.links import Endpoint, redact
from app.store.couch import CouchError, Database

log = logging.getLogger(__name__)

PROBE_SECONDS = 10.0
REPLICATE_SECONDS = 600.0


class AccountsError(Exception):
    """The secrets database could not be replicated; `reason` is free of credentials."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


def replicate_accounts(db: Database, source: Endpoint, target: Endpoint, since: Any) -> Any:
    """One-shot `_replicate` of the secrets database (both checked to exist by the
    caller), then drop the losing revisions of everything the target received after
    `since` and compact. Return the target's sequence resolved through, for the next
    run to start from: a resolution that failed is tried again then, not forgotten."""
    endpoints = [source, target]
    try:
        target_db = target.open(timeout=PROBE_SECONDS)
        db.server.request(
            "POST",
            "_replicate",
            body={"source": source.with_credentials(), "target": target.with_credentials()},
            timeout=REPLICATE_SECONDS,
            idempotent=False,
        )
        through = target_db.info()["update_seq"]
        if through != since:  # something arrived (or was resolved) since then
            resolved = resolve_conflicts(target_db, since)
            compact_database(target_db)
            if resolved:
                log.info("secrets: dropped %d losing revisions at %s", resolved, target.url)
    except CouchError as exc:
        raise AccountsError("accounts_replication_failed", redact(str(exc), endpoints)) from None
    return through


def resolve_conflicts(sdb: Database, since: Any) -> int:
    """Delete the losing revisions of documents changed since `since`; return how many."""
    feed = sdb.changes(since=since, style="all_docs")
    dropped = 0
    for row in feed["results"]:
        if len(row.get("changes", [])) < 2:
            continue  # one leaf: no conflict
        doc = sdb.get(row["id"], conflicts=True)
        for rev in doc.get("_conflicts", []):
            sdb.delete(row["id"], rev)
            dropped += 1
    return dropped
