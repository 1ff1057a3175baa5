"""Dead letters: deliveries a webhook's receiver refused `webhook_max_attempts` times.

Where they live, and why not in the log: a dead letter is this site's
delivery state, not a fact of the archive. It changes (queued, retried,
deleted once delivered), it means nothing at another site (only the
registering site delivers), and the event it points to is in the log
already. So it is a read-model document, `deadletter:<webhook>:<delivery>`
{type, webhook, delivery, event, seq, name, attempts, last_error, dead_at,
state: dead|queued, tries, next_attempt_at}, that the delivery job writes
and deletes; it has no `version`, so no projection view counts it and a
rebuild leaves it alone.

The delivery id is derived from the webhook and the event (delivery_id), so
a redelivery carries the same `X-Distleech-Delivery` as the first attempts
and receivers can dedupe on it (or on `X-Distleech-Event-Id`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from app.errors import DeadLetterNotFoundError
from app.store.couch import Database, DocumentConflictError
from app.store.events import Doc
from app.timeutil import iso

PREFIX = "deadletter:"
DEAD, QUEUED = "dead", "queued"


def delivery_id(webhook_id: str, event_id: str) -> str:
    """The id of one webhook's delivery of one event: the same for every attempt."""
    return hashlib.sha256(f"{webhook_id}\n{event_id}".encode()).hexdigest()[:32]


def dead_letter_id(webhook_id: str, delivery: str) -> str:
    return f"{PREFIX}{webhook_id}:{delivery}"


def add_dead_letter(
    db: Database, webhook_id: str, event: Doc, seq: str, attempts: int, error: str, now: datetime
) -> Doc:
    """Keep a delivery that failed every attempt; the webhook moves on to the next event."""
    delivery = delivery_id(webhook_id, event["_id"])
    doc: Doc = {
        "_id": dead_letter_id(webhook_id, delivery),
        "type": "deadletter",
        "webhook": webhook_id,
        "delivery": delivery,
        "event": event["_id"],
        "name": event.get("name", ""),
        "seq": seq,
        "attempts": attempts,
        "last_error": error,
        "dead_at": iso(now),
        "state": DEAD,
        "tries": 0,
        "next_attempt_at": None,
    }
    existing = db.get_or_none(doc["_id"])  # the same event dead again after a replay
    if existing is not None:
        doc["_rev"] = existing["_rev"]
        doc["attempts"] += int(existing.get("attempts", 0))
    db.put(doc)
    return doc


def list_dead_letters(db: Database, webhook_id: str) -> list[Doc]:
    """A webhook's dead letters, by delivery id."""
    return list(db.iter_prefix(f"{PREFIX}{webhook_id}:"))


def count_dead_letters(db: Database, webhook_id: str) -> int:
    """How many dead letters a webhook has: their ids only, no bodies read."""
    return sum(1 for _ in db.iter_ids(f"{PREFIX}{webhook_id}:"))


def public_dead_letter(doc: Doc) -> dict[str, Any]:
    """What the API and CLI show of a dead letter."""
    keys = ("delivery", "event", "name", "seq", "attempts", "last_error", "dead_at", "state")
    return {key: doc.get(key) for key in keys} | {"next_attempt_at": doc.get("next_attempt_at")}


def queue_redelivery(
    db: Database, webhook_id: str, delivery: str | None, now: datetime
) -> list[str]:
    """Ask the delivery job to deliver dead letters again (one, or all); return their ids.

    The job makes the requests (a slow receiver never slows the app); a
    redelivery that fails `webhook_max_attempts` times is dead again.
    """
    if delivery is not None:
        doc = db.get_or_none(dead_letter_id(webhook_id, delivery))
        if doc is None:
            raise DeadLetterNotFoundError(
                f"No dead letter {delivery!r} of webhook {webhook_id!r}.",
                webhook=webhook_id,
                delivery=delivery,
            )
        docs = [doc]
    else:
        docs = list_dead_letters(db, webhook_id)
    queued = [{**doc, "state": QUEUED, "tries": 0, "next_attempt_at": iso(now)} for doc in docs]
    results = db.bulk_docs(queued)
    return [doc["delivery"] for doc, result in zip(queued, results, strict=True) if result.ok]


def due_redeliveries(db: Database, webhook_id: str, now: datetime, limit: int) -> list[Doc]:
    """Queued dead letters whose next attempt is due, oldest first."""
    stamp = iso(now)
    due = [
        doc
        for doc in list_dead_letters(db, webhook_id)
        if doc.get("state") == QUEUED and (doc.get("next_attempt_at") or "") <= stamp
    ]
    return sorted(due, key=lambda doc: str(doc.get("dead_at")))[:limit]


def record_redelivery(
    db: Database, doc: Doc, ok: bool, error: str, next_attempt_at: datetime | None
) -> None:
    """Delete a dead letter that was delivered; else count the try and schedule the next.

    `next_attempt_at` None means the tries are used up: it is dead again.
    A conflict means an admin queued it again meanwhile: their request wins.
    """
    try:
        if ok:
            db.delete(doc["_id"], doc["_rev"])
            return
        doc.update(tries=int(doc.get("tries", 0)) + 1, last_error=error)
        doc["attempts"] = int(doc.get("attempts", 0)) + 1
        if next_attempt_at is None:
            doc.update(state=DEAD, next_attempt_at=None)
        else:
            doc["next_attempt_at"] = iso(next_attempt_at)
        db.put(doc)
    except DocumentConflictError:
        pass


def forget_all(db: Database, webhook_id: str) -> int:
    """Delete a removed webhook's dead letters; return how many."""
    docs = list_dead_letters(db, webhook_id)
    gone = [{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True} for doc in docs]
    return sum(1 for result in db.bulk_docs(gone) if result.ok)
