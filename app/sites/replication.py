"""One replication of the event log with another site, and what became of it.

The scheduler's leader runs `replicate_site` for every configured site every
`scheduler.replicate_seconds`. Each flow (push, pull) is a one-shot
`_replicate` on this site's CouchDB: both servers support it, it resumes from
the checkpoints CouchDB keeps in `_local` documents of both logs, and the
scheduler sees its outcome at once. Before each run both logs are checked:
a missing database is reported (`site_database_missing`), never created
(pouchdb-server would create a missing target silently). A failed flow is
retried with exponential backoff (`replicate_seconds` doubled per failure, at
most `replicate_max_backoff_seconds`); after FAILING_AFTER failures in a row
its state says "failing" instead of "retrying". With `accounts` (the
default) the same flow then replicates the secrets database
(app/sites/accounts.py); the events count as arrived either way.

The state of every flow lives in one `_local/site:<name>` document of the
read model: local documents never replicate and never reach `_changes` or a
view, so writing them costs the lease path nothing.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.sites.accounts import AccountsError, replicate_accounts
from app.sites.links import FILTER, PULL, PUSH, Endpoint, SiteLink, local_endpoint, redact
from app.store.couch import (
    CouchError,
    Database,
    DocumentConflictError,
    DocumentNotFoundError,
    UnauthorizedError,
)
from app.store.events import site_of
from app.timeutil import iso, parse_iso

log = logging.getLogger(__name__)

FAILING_AFTER = 3  # consecutive failures before a flow is "failing" rather than "retrying"
PENDING_LIMIT = 10_000  # pending events are counted up to this many
PROBE_SECONDS = 10.0  # checking a site's log, counting its pending events
REPLICATE_SECONDS = 600.0  # one `_replicate` request; the next resumes from its checkpoint


class SiteError(Exception):
    """A replication could not run or did not finish; `code` is stable, `reason` is safe to show."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


def status_id(name: str) -> str:
    return f"_local/site:{name}"


def read_status(db: Database, name: str) -> dict[str, Any]:
    """The stored state of a site's flows ({} before the first attempt)."""
    try:
        return db.get(status_id(name))
    except DocumentNotFoundError:
        return {"_id": status_id(name)}


def replicate_site(db: Database, link: SiteLink, settings: Settings, now: datetime) -> dict:
    """Run every flow of this site that is due; store and return the site's state."""
    status = read_status(db, link.name)
    flows = status.setdefault("flows", {})
    if status.get("url") != link.remote.url:  # a new or corrected address: try it at once
        flows.clear()
        status["url"] = link.remote.url
    for flow in link.flows:
        state = flows.setdefault(flow, {})
        due = state.get("next_attempt")
        if due and parse_iso(due) > now:
            continue
        flows[flow] = run_flow(db, link, flow, state, settings, now)
    for gone in set(flows) - set(link.flows):  # the direction was changed in the config
        del flows[gone]
    _store(db, status, link.name)
    return status


def run_flow(
    db: Database, link: SiteLink, flow: str, state: dict, settings: Settings, now: datetime
) -> dict:
    """One attempt of one flow: check both logs, replicate, count what is still pending."""
    local = local_endpoint(db)
    source, target = (local, link.remote) if flow == PUSH else (link.remote, local)
    state = dict(state, last_attempt=iso(now), attempts=state.get("attempts", 0) + 1)
    try:
        infos = {
            PUSH: _check_database(local, "this site's event log"),
            PULL: _check_database(link.remote, f"site {link.name}'s event log"),
        }
        through = infos[flow]["update_seq"]  # the source's (push: ours, pull: theirs)
        written = _replicate(db, source, target)
        # the events are there, whatever becomes of the accounts below
        state.update(
            checkpoint=through,
            events_written=state.get("events_written", 0) + written,
            last_written=written,
        )
        if link.accounts is not None:
            state["accounts_checkpoint"] = _replicate_accounts(
                db, link, flow, state.get("accounts_checkpoint")
            )
    except SiteError as exc:
        failures = state.get("failures", 0) + 1
        backoff = min(
            settings.scheduler.replicate_seconds * 2**failures,
            settings.scheduler.replicate_max_backoff_seconds,
        )
        state.update(
            state="failing" if failures >= FAILING_AFTER else "retrying",
            failures=failures,
            last_error={"code": exc.code, "reason": exc.reason, "at": iso(now)},
            next_attempt=iso(now + timedelta(seconds=backoff)),
        )
        log.warning("replication %s %s failed (%d in a row): %s", flow, link.name, failures, exc)
    else:
        state.update(state="running", failures=0, last_success=iso(now), next_attempt=None)
        if written:
            log.info("replication %s %s: %d events", flow, link.name, written)
    # what the target needs: not the events that came from it
    state["pending"] = count_pending(
        source, state.get("checkpoint"), skip_site=link.name if flow == PUSH else site_of(db)
    )
    state["pending_as_of"] = iso(now)
    return state


def _check_database(endpoint: Endpoint, what: str) -> dict[str, Any]:
    """This database's info; SiteError unless it exists and takes these credentials."""
    try:
        return endpoint.open(timeout=PROBE_SECONDS).info()
    except DocumentNotFoundError:
        raise SiteError(
            "site_database_missing",
            f"{what} {endpoint.url} does not exist (it is never created by "
            "replication: run `distleech init` there)",
        ) from None
    except UnauthorizedError:
        raise SiteError(
            "site_unauthorized",
            f"{what} {endpoint.url} refused the credentials (set "
            "DISTLEECH_SITES__<NAME>__USERNAME/__PASSWORD for another site)",
        ) from None
    except CouchError as exc:
        raise SiteError(
            "site_unreachable", f"{what} {endpoint.url}: {_cause(exc, [endpoint])}"
        ) from None


def _cause(exc: CouchError, endpoints: list[Endpoint]) -> str:
    """A short, credential-free reason: the connection error's last words, or the answer."""
    text = redact(str(exc), endpoints)
    if exc.status == 0:  # no answer: keep what the socket said ("Connection refused", …)
        said = re.findall(r"\] ([^\]\)\"']+)", text) or re.findall(r"(timed out)", text)
        return f"cannot be reached ({said[-1].strip()})" if said else "cannot be reached"
    return text


def _replicate(db: Database, source: Endpoint, target: Endpoint) -> int:
    """One-shot `_replicate` on this site's server; return the events written."""
    body = {
        "source": source.with_credentials(),
        "target": target.with_credentials(),
        "filter": FILTER,
    }
    try:
        answer = db.server.request(
            "POST", "_replicate", body=body, timeout=REPLICATE_SECONDS, idempotent=False
        ).json()
    except CouchError as exc:
        raise SiteError("replication_failed", redact(str(exc), [source, target])) from None
    return _written(answer, [source, target])


def _replicate_accounts(db: Database, link: SiteLink, flow: str, resolved_through: Any) -> Any:
    assert link.accounts is not None
    local = local_endpoint(db, "secrets")
    infos = {
        PUSH: _check_database(link.accounts, f"site {link.name}'s secrets database"),
        PULL: _check_database(local, "this site's secrets database"),
    }
    source, target = (local, link.accounts) if flow == PUSH else (link.accounts, local)
    since = infos[flow]["update_seq"] if resolved_through is None else resolved_through
    try:
        return replicate_accounts(db, source, target, since)
    except AccountsError as exc:
        raise SiteError(exc.code, exc.reason) from None


def _written(answer: dict[str, Any], endpoints: list[Endpoint]) -> int:
    """Events written by one `_replicate`; refused writes are an error.

    pouchdb-server answers the counts at the top level, Apache CouchDB in
    `history[0]` (or `no_changes: true`).
    """
    counts = answer if "docs_written" in answer else (answer.get("history") or [{}])[0]
    failures = int(counts.get("doc_write_failures", 0) or 0)
    if not answer.get("ok", True) or failures:
        detail = answer.get("errors") or answer.get("reason") or ""
        raise SiteError(
            "replication_refused",
            redact(
                f"{failures} events were refused by the target's validator or rights {detail}",
                endpoints,
            ),
        )
    return int(counts.get("docs_written", 0) or 0)


def count_pending(source: Endpoint, checkpoint: Any, *, skip_site: str = "") -> int | None:
    """Events in `source` after the last successful run (None when it cannot be asked).

    Counted from the source's `_changes` since the update sequence read before
    that run, up to PENDING_LIMIT, leaving out events that came from the
    target (`skip_site`, named in every event id): they need not go back.
    What arrived from elsewhere meanwhile counts too, so this is an upper
    bound, right to the event when replication is idle.
    """
    try:
        feed = source.open(timeout=PROBE_SECONDS).changes(
            since=checkpoint if checkpoint is not None else 0, limit=PENDING_LIMIT
        )
    except CouchError:
        return None
    return sum(
        1
        for row in feed["results"]
        if row["id"].startswith("ev:") and event_site(row["id"]).lower() != skip_site.lower()
    )


def event_site(event_id: str) -> str:
    """The site named in an event id `ev:<time>:<site>:<random>`."""
    parts = event_id.split(":")
    return parts[2] if len(parts) == 4 else ""


def _store(db: Database, status: dict, name: str) -> None:
    """Write the status; only the leader writes it, so a conflict is a restarted leader."""
    try:
        db.put(status)
    except DocumentConflictError:
        status.pop("_rev", None)
        if rev := read_status(db, name).get("_rev"):
            status["_rev"] = rev
        db.put(status)
