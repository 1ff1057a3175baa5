"""What is leased now, across every queue, and an admin's hand release of one lease.

A release ends every holder's lease of an item at once, as if they had all
expired: the item is ready again in its queue, and the event ("released",
handled by the shared life cycle in app/queues/holders.py) names the admin
as actor and says why. Nothing else changes, so a worker that still sends a
result for the item is recorded as any late result is (invariant 3).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from app.errors import NotFoundError, ValidationFailedError
from app.queues import albums, archive
from app.queues.holders import LEASED, holders_of
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso

# The queues an admin sees, by the range of queue names each covers in the
# stats/leases_by_queue view (downloads have one queue per site: "download:<host>").
QUEUE_GROUPS: dict[str, tuple[str, str]] = {
    "metadata": (albums.QUEUE, albums.QUEUE),
    "downloads": ("download:", "download:\ufff0"),
    "archive": (archive.QUEUE, archive.QUEUE),
    "sources": ("sources", "sources"),  # sync orders (app/sources/orders.py)
}
MAX_ID_CHARS = 500
MAX_REASON_CHARS = 1000
DEFAULT_REASON = "released by hand"


@dataclasses.dataclass(frozen=True)
class LeasedQueue:
    """One group's leases, soonest to expire first; `total` counts all, `items` the first few."""

    name: str
    total: int
    items: list[dict[str, Any]]


def check_item_id(raw: Any) -> str:
    """An aggregate id such as `album:123`; raise validation_failed otherwise."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > MAX_ID_CHARS or ":" not in text or text.startswith("_"):
        raise ValidationFailedError(
            f"id must be the id of a queued item, such as album:123, got {raw!r}."
        )
    return text


def check_release_reason(raw: Any) -> str:
    """An optional reason (text up to MAX_REASON_CHARS); the default says it was by hand."""
    if raw is None:
        return DEFAULT_REASON
    if not isinstance(raw, str) or len(raw) > MAX_REASON_CHARS:
        raise ValidationFailedError(
            f"reason must be text of at most {MAX_REASON_CHARS} characters."
        )
    return raw.strip() or DEFAULT_REASON


def _release_decision(reason: str) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("state") != LEASED or not state.get("queue"):
            return None
        holders = [h["holder"] for h in holders_of(state.get("lease"))]
        return "released", {
            "holder": holders[0] if holders else None,
            "holders": holders,
            "reason": reason,
        }

    return decide


def release_lease(
    db: Database, item_id: str, *, actor: str, now: datetime, reason: str = DEFAULT_REASON
) -> dict[str, Any]:
    """End every lease of a queued item now, so it is ready again at once; return what was done.

    Raises NotFoundError (404 not_found) when no item has that id or it is not
    leased: a second click on the same Release button says so instead of
    recording an event that changes nothing.
    """
    [outcome] = commit(db, [(item_id, _release_decision(reason))], actor=actor, now=now)
    state = outcome.state
    if state is None or not state.get("queue"):
        raise NotFoundError(f"No queued item has id {item_id!r}.", id=item_id)
    if outcome.event is None:
        raise NotFoundError(
            f"{item_id} is not leased (it is {state.get('state')}); nothing to release.",
            id=item_id,
        )
    return {
        "id": item_id,
        "queue": state["queue"],
        "state": state["state"],
        "released": outcome.event["data"]["holders"],
        "reason": reason,
    }


def list_leases(db: Database, now: datetime, *, limit: int = 200) -> list[LeasedQueue]:
    """Every queue group's leases now, soonest to expire first (at most `limit` items each)."""
    return [
        _leased_in(db, name, first, last, now, limit)
        for name, (first, last) in QUEUE_GROUPS.items()
    ]


def _leased_in(
    db: Database, name: str, first: str, last: str, now: datetime, limit: int
) -> LeasedQueue:
    span: dict[str, Any] = {"startkey": [first], "endkey": [last, {}]}
    counted = db.view("stats", "leases_by_queue", **span)
    total = counted[0]["value"] if counted else 0
    rows = db.view("stats", "leases_by_queue", reduce=False, include_docs=True, limit=limit, **span)
    # the view sorts by queue first: one group's several download queues merge by expiry
    docs = sorted((r["doc"] for r in rows if r.get("doc")), key=lambda d: d["lease"]["expires_at"])
    return LeasedQueue(name, total, [leased_item(doc, now) for doc in docs])


def leased_item(doc: Doc, now: datetime) -> dict[str, Any]:
    """What a person needs to see about one leased item: what it is, who holds it, until when."""
    lease = doc.get("lease") or {}
    return {
        "id": doc["_id"],
        "queue": doc.get("queue"),
        "what": describe(doc),
        "holders": holders_of(lease) if lease else [],
        "expires_at": lease.get("expires_at"),
        "expired": lease.get("expires_at", "~") <= iso(now),
    }


def describe(doc: Doc) -> str:
    """One line naming the work: an album's artist and title, a torrent, a URL."""
    if doc.get("type") == "album":
        return f"{doc.get('sortArtist', '')}: {doc.get('album', '')}"
    if doc.get("type") == "dltask":
        return f"torrent {doc.get('siteTorrentId')} on {doc.get('site')}"
    if doc.get("type") == "urltask":
        return str(doc.get("url", ""))
    if doc.get("type") == "syncorder":
        return f"sync of source {doc.get('source_id', '')}"
    return str(doc["_id"])


def url_task_row(doc: Doc) -> dict[str, Any]:
    """A URL task as the admin's archive list shows it (page, API and CLI alike)."""
    lease = doc.get("lease") or {}
    return {
        "id": doc["id"],
        "url": doc["url"],
        "mode": doc["mode"],
        "state": doc["state"],
        "attempts": doc.get("attempts", 0),
        "holders": [h["holder"] for h in holders_of(lease)] if lease else [],
        "expires_at": lease.get("expires_at"),
        "last_reason": doc.get("last_reason"),
        "queued_at": doc.get("queued_at"),
    }
