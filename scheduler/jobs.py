"""The scheduler's jobs: plain functions of (db, now), so tests call them with a fixed now.

Each job is idempotent and bounded, and calls the same operations the HTTP
handlers use (never the app over HTTP). A job's scheduler id is its name.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import app.store  # noqa: F401  (registers every projector that catch-up may replay)
from app import events, leasing, stats
from app.couch import Database

log = logging.getLogger(__name__)


def reap_expired_leases(db: Database, now: datetime) -> int:
    """Return every lease that expired by `now` to its queue; return how many.

    Run every `scheduler.reap_seconds`, so an expired lease is back in its
    queue within one interval (invariant 2).
    """
    reaped = leasing.reap_expired_leases(db, now)
    if reaped:
        log.info("reaped %d expired leases", reaped)
    return reaped


def catch_up_projections(db: Database, now: datetime) -> int:
    """Repair projections that lag their events; return how many were repaired.

    Heals a crash between writing an event and its projection. `now` is
    unused (events carry their own times); it keeps every job's signature alike.
    """
    repaired = events.catch_up_projections(db)
    if repaired:
        log.info("repaired %d lagging projections", repaired)
    return repaired


def snapshot_stats(db: Database, now: datetime) -> dict[str, Any]:
    """Recount the stats snapshot that /stats serves, so /stats never reduces a whole view."""
    return stats.snapshot_stats(db, now)
