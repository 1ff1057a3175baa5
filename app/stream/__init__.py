"""Every fact as a feed: server-sent events of the event log, and webhooks.

- app/stream/feed.py: reading the log's `_changes` (filter `log/events`), event filters;
- app/stream/sse.py: GET /api/events, the log as server-sent events;
- app/stream/webhooks.py: the webhook aggregate and its secret;
- app/stream/delivery.py: the scheduler job that delivers, retries and gives up;
- app/stream/posting.py: one signed POST, to public addresses only;
- app/stream/deadletters.py: deliveries that failed every attempt, and their redelivery.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.config import Settings
from app.store.couch import Database
from app.store.events import Projector
from app.stream import webhooks

# aggregate type -> projector, merged into app/projectors.py's table
PROJECTORS: dict[str, Projector] = {webhooks.WEBHOOK: webhooks.apply_webhook_event}


def scheduled_jobs(settings: Settings) -> list[tuple[Callable[[Database, datetime], Any], float]]:
    """The scheduler's jobs of this context, with their intervals in seconds."""
    return [(webhook_deliverer(settings), settings.events.webhook_seconds)]


def webhook_deliverer(settings: Settings) -> Callable[[Database, datetime], Any]:
    """The deliver_webhooks job for these settings (timeouts, attempts, backoff)."""
    from app.stream.delivery import deliver_webhooks as deliver

    def deliver_webhooks(db: Database, now: datetime) -> Any:
        """Deliver due webhook events and redeliveries, bounded per webhook."""
        return deliver(db, now, settings.events)

    return deliver_webhooks
