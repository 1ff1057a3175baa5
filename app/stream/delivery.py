"""The webhook delivery job: each webhook follows the log on its own, one event at a time.

Run by the scheduler every `events.webhook_seconds` (never by the app, so a
slow or failing receiver never slows a request). Each webhook registered at
this site gets its own thread for the run, so a slow receiver delays only
its own deliveries, and does bounded work: at most `events.webhook_batch`
attempts and about `max(webhook_seconds, webhook_timeout_seconds)` seconds.

Per webhook, in log order: the first event that matches its filter is
POSTed; a 2xx moves the webhook past it; anything else (an error status, a
timeout after `webhook_timeout_seconds`, a refused connection, a redirect)
is a failed attempt, retried after `webhook_backoff_seconds` × 2^(n-1) while
later events wait, so a receiver sees events in log order. After
`webhook_max_attempts` failed attempts the event becomes a dead letter
(app/stream/deadletters.py) and the webhook moves on. urllib3's own retries
are off: the job alone decides when to try again.

Each run looks at the webhook's projection again before every few POSTs
(RECHECK_EVERY, RECHECK_SECONDS) and before writing a dead letter: a
webhook removed while its run is under way (here or at another site) stops
getting events at once, and the run forgets what it kept of it
(webhooks.forget_webhook) rather than writing new dead letters or a new
position. Removed webhooks whose secret is still here (removed at another
site) are forgotten at the start of each run.

Connections go only to public addresses unless `events.webhook_allow_private`:
the address is checked on the connected socket itself (PublicOnlyAdapter in
app/stream/posting.py, which signs and posts each event),
so a DNS record that changed since registration cannot point a delivery
into the internal network. A failed attempt's `last_error` is the status
code and its standard reason phrase, never the receiver's body.

The position lives in the read model's `_local/webhook:<id>` (app/stream/webhooks.py
checkpoint_id) with the delivery state the API shows. It is saved after every
failure and every CHECKPOINT_EVERY deliveries: a scheduler that dies
mid-run delivers at most that many events again (receivers dedupe by
`X-Distleech-Event-Id`). A conflict on it means another scheduler copy is
running the same webhook: this one stops.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from app.config import EventsSettings
from app.store.couch import CouchError, Database, DocumentConflictError
from app.store.events import Doc, event_log
from app.stream import deadletters
from app.stream.feed import EventFilter, read_batch
from app.stream.posting import MAX_PARALLEL, Attempt, post_event
from app.stream.webhooks import (
    all_webhooks,
    checkpoint_id,
    forget_removed_webhooks,
    forget_webhook,
    get_secret,
    is_active,
    is_delivered_here,
)
from app.timeutil import iso

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 50
# A running delivery looks at the webhook's state again after this many POSTs or seconds.
RECHECK_EVERY = 10
RECHECK_SECONDS = 1.0


@dataclasses.dataclass
class Tally:
    """What one run did for one webhook (or, summed, for all)."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.delivered + other.delivered, self.failed + other.failed, self.dead + other.dead
        )


def backoff(settings: EventsSettings, failures: int) -> timedelta:
    """How long to wait after the n-th failed attempt in a row (n from 1)."""
    return timedelta(seconds=settings.webhook_backoff_seconds * 2 ** max(0, failures - 1))


def deliver_webhooks(db: Database, now: datetime, settings: EventsSettings) -> Tally:
    """Run every webhook of this site once (each in its own thread); return the totals.

    First forget the removed webhooks whose secret is still here (removed
    at another site: only their `removed` event came).
    """
    every = all_webhooks(db)
    for webhook_id in forget_removed_webhooks(db, every):
        log.info("webhook %s was removed (elsewhere); its secret and state are gone", webhook_id)
    webhooks = [doc for doc in every if is_delivered_here(db, doc)]
    if not webhooks:
        return Tally()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(webhooks))) as pool:
        tallies = list(pool.map(lambda doc: _run_safely(db, doc, now, settings), webhooks))
    total = sum(tallies, Tally())
    if total.delivered or total.failed:
        log.info("webhooks: %d delivered, %d failed, %d dead", *dataclasses.astuple(total))
    return total


def _run_safely(db: Database, webhook: Doc, now: datetime, settings: EventsSettings) -> Tally:
    """One webhook's run; a database error ends only this webhook's run."""
    try:
        return WebhookRun(db, webhook, now, settings).run()
    except CouchError as exc:
        log.warning("webhook %s: the database failed (%s); next run goes on", webhook["_id"], exc)
        return Tally()


class WebhookRun:
    """One webhook's share of one job run: redeliveries first, then the log in order."""

    def __init__(self, db: Database, webhook: Doc, now: datetime, settings: EventsSettings) -> None:
        self.db, self.webhook, self.now, self.settings = db, webhook, now, settings
        self.id = webhook["_id"].split(":", 1)[1]
        self.filter = EventFilter(frozenset(webhook["types"]), frozenset(webhook["names"]))
        self.tally = Tally()
        self.attempts = 0
        self.unsaved = 0
        self.removed = False  # seen removed during the run: stop, forget, write nothing
        self.checked_at, self.checked_after = time.monotonic(), 0  # the last state check
        self.ends_at = time.monotonic() + max(
            settings.webhook_seconds, settings.webhook_timeout_seconds
        )
        self.checkpoint: Doc = {}

    def run(self) -> Tally:
        secret = get_secret(self.db, self.id)
        if secret is None:
            log.warning("webhook %s has no secret; nothing is delivered", self.id)
            return self.tally
        self.secret = secret
        self.checkpoint = load_checkpoint(self.db, self.id)
        self._redeliver()
        head = self.checkpoint.get("head") or {}
        if (head.get("next_attempt_at") or "") <= iso(self.now):
            self._follow_log()
        self._save()
        if self.removed or not self._still_active(force=True):
            # Removed during the run: what the run wrote (a dead letter, its position)
            # may have come after remove_webhook's clean-up, so clean up again.
            forget_webhook(self.db, self.id)
        return self.tally

    def _budget_left(self) -> bool:
        """Whether to make another POST: attempts and time left, and still active."""
        if self.attempts >= self.settings.webhook_batch or time.monotonic() >= self.ends_at:
            return False
        return self._still_active()

    def _still_active(self, *, force: bool = False) -> bool:
        """Whether the webhook is still active, read again every few POSTs or seconds.

        The run holds the secret in memory, so without this a webhook removed
        meanwhile would go on getting events until the run's budget is spent.
        """
        if self.removed:
            return False
        due = self.attempts - self.checked_after >= RECHECK_EVERY
        if force or due or time.monotonic() - self.checked_at >= RECHECK_SECONDS:
            self.checked_at, self.checked_after = time.monotonic(), self.attempts
            self.removed = not is_active(self.db, self.id)
        return not self.removed

    def _post(self, event: Doc, seq: str, attempt: int) -> Attempt:
        self.attempts += 1
        url, timeout = self.webhook["url"], self.settings.webhook_timeout_seconds
        outcome = post_event(
            url,
            self.secret,
            self.id,
            event,
            seq,
            attempt,
            timeout,
            allow_private=self.settings.webhook_allow_private,
        )
        if outcome.ok:
            self.tally.delivered += 1
            self.checkpoint["delivered"] = self.checkpoint.get("delivered", 0) + 1
            last = {"event": event["_id"], "seq": seq, "at": iso(self.now)}
            self.checkpoint["last_delivered"] = last
        else:
            self.tally.failed += 1
            self.checkpoint["failures"] = self.checkpoint.get("failures", 0) + 1
            error = {"event": event["_id"], "error": outcome.error, "at": iso(self.now)}
            self.checkpoint["last_error"] = error
        return outcome

    def _redeliver(self) -> None:
        """Queued dead letters that are due, each tried once this run."""
        limit = self.settings.webhook_batch
        for doc in deadletters.due_redeliveries(self.db, self.id, self.now, limit):
            if not self._budget_left():
                return
            event = event_log(self.db).get_or_none(doc["event"])
            if event is None:  # not in this log (cannot happen here): nothing to deliver
                deadletters.record_redelivery(self.db, doc, True, "", None)
                continue
            tries = int(doc.get("tries", 0)) + 1
            outcome = self._post(event, doc["seq"], int(doc.get("attempts", 0)) + 1)
            retry_at = None if tries >= self.settings.webhook_max_attempts else self.now
            if retry_at is not None:
                retry_at += backoff(self.settings, tries)
            deadletters.record_redelivery(self.db, doc, outcome.ok, outcome.error, retry_at)

    def _follow_log(self) -> None:
        """Deliver matching events after the checkpoint, in order, until the budget is spent."""
        while self._budget_left():
            batch = read_batch(self.db, self.checkpoint["seq"], self.settings.batch)
            for seq, event in batch.rows:
                if not self.filter.matches(event):
                    self.checkpoint["seq"] = seq
                    continue
                if not self._budget_left() or not self._deliver_in_order(event, seq):
                    return
            self.checkpoint["seq"] = batch.last_seq
            if not batch.full:
                return

    def _deliver_in_order(self, event: Doc, seq: str) -> bool:
        """Try the event at the head of the log; False when the webhook must wait (or stop)."""
        head = self.checkpoint.get("head") or {}
        failures = int(head.get("attempts", 0)) if head.get("event") == event["_id"] else 0
        outcome = self._post(event, seq, failures + 1)
        if outcome.ok:
            self.checkpoint.update(seq=seq, head=None)
            self.unsaved += 1
            return self.unsaved < CHECKPOINT_EVERY or self._save()
        failures += 1
        if failures >= self.settings.webhook_max_attempts:
            if not self._still_active(force=True):
                return False  # removed meanwhile: no dead letter of a removed webhook
            error, now = outcome.error, self.now
            deadletters.add_dead_letter(self.db, self.id, event, seq, failures, error, now)
            self.tally.dead += 1
            self.checkpoint.update(seq=seq, head=None)
            return self._save()
        retry_at = iso(self.now + backoff(self.settings, failures))
        self.checkpoint["head"] = {
            "event": event["_id"],
            "seq": seq,
            "attempts": failures,
            "next_attempt_at": retry_at,
        }
        self._save()
        return False

    def _save(self) -> bool:
        """Store the checkpoint; False when another copy of the job moved it meanwhile
        (or the webhook was removed: its position must not come back)."""
        if self.removed:
            return False
        try:
            self.db.put(self.checkpoint)
        except DocumentConflictError:
            log.warning("webhook %s: another scheduler is delivering it; stopping", self.id)
            self.ends_at = 0.0
            return False
        self.unsaved = 0
        return True


def load_checkpoint(db: Database, webhook_id: str) -> Doc:
    """A webhook's position and delivery state; a lost one starts at the log's beginning.

    Registration writes it before the webhook exists, so it is missing only
    when the read model was lost: delivering again (at least once) beats
    skipping events silently.
    """
    doc = db.get_or_none(checkpoint_id(webhook_id))
    if doc is None:
        log.warning("webhook %s has no checkpoint; delivering from the start", webhook_id)
        return {"_id": checkpoint_id(webhook_id), "seq": "0"}
    return doc


def delivery_state(
    db: Database, webhook_id: str, *, log_seq: str | None = None, scan: int = 2000
) -> dict[str, Any]:
    """What the API shows of a webhook's deliveries: position, counts, errors, pending.

    Without `log_seq`, `pending` counts the matching events after the
    position, reading at most `scan` rows of the log (`pending_exact` false
    when it stopped there): for one webhook. With the log's current
    update_seq (read once for a list of webhooks), `pending` is only an
    estimate that reads nothing (estimate_pending) and `pending_exact` is false.
    """
    checkpoint = db.get_or_none(checkpoint_id(webhook_id)) or {"seq": "0"}
    head = checkpoint.get("head") or {}
    last = checkpoint.get("last_delivered") or {}
    error = checkpoint.get("last_error") or {}
    position = str(checkpoint["seq"])
    pending, exact = _pending(db, webhook_id, position, log_seq, scan)
    return {
        "position": str(checkpoint["seq"]),
        "last_delivered_seq": last.get("seq"),
        "last_delivered_event": last.get("event"),
        "last_delivered_at": last.get("at"),
        "delivered": checkpoint.get("delivered", 0),
        "pending": pending,
        "pending_exact": exact,
        "failures": checkpoint.get("failures", 0),
        "retrying_event": head.get("event"),
        "attempts": head.get("attempts", 0),
        "next_attempt_at": head.get("next_attempt_at"),
        "last_error": error.get("error"),
        "last_error_at": error.get("at"),
        "dead_letters": deadletters.count_dead_letters(db, webhook_id),
    }


def _pending(
    db: Database, webhook_id: str, position: str, log_seq: str | None, scan: int
) -> tuple[int | None, bool]:
    """Pending deliveries and whether that is exact: counted, or estimated from log_seq."""
    if log_seq is None:
        return _count_pending(db, webhook_id, position, scan)
    return estimate_pending(position, log_seq), False


def estimate_pending(position: str, log_seq: str) -> int | None:
    """About how many changes of the log lie after `position`: approximate, cheap.

    The number in front of a seq (all of it on pouchdb-server, the part
    before "-" on Apache CouchDB, where it sums the shards' counters) grows
    by one per change of the log, so the difference counts every change
    after the position, matching or not (an upper bound of what is pending;
    on a cluster only a rough one). None when either seq has no such number.
    This is the one place a seq is read as more than opaque text, and only
    for a figure shown to admins, never to decide anything.
    """
    numbers = [_SEQ_NUMBER.match(seq) for seq in (position, log_seq)]
    if numbers[0] is None or numbers[1] is None:
        return None
    return max(0, int(numbers[1].group()) - int(numbers[0].group()))


_SEQ_NUMBER = re.compile(r"\d+")


def _count_pending(db: Database, webhook_id: str, since: str, scan: int) -> tuple[int, bool]:
    webhook = db.get(f"webhook:{webhook_id}")
    wanted = EventFilter(frozenset(webhook.get("types", [])), frozenset(webhook.get("names", [])))
    count = seen = 0
    while seen < scan:
        batch = read_batch(db, since, min(500, scan - seen))
        seen += len(batch.rows)
        count += sum(1 for _, event in batch.rows if wanted.matches(event))
        since = batch.last_seq
        if not batch.full:
            return count, True
    return count, False
