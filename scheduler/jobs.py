"""The scheduler's jobs: plain functions of (db, now), so tests call them with a fixed now.

Each job is idempotent and bounded, and calls the same operations the HTTP
handlers use (never the app over HTTP). A job's scheduler id is its name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app import stats
from app.config import Settings
from app.queues import leasing
from app.sites import replication
from app.sites.links import SiteLink
from app.storage import status as storage_status
from app.store import catchup, projections
from app.store.couch import Database
from app.tracker import peersdb

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
    """Bring the read model to the log; return how many projections were repaired.

    Follows the log for changes the read model misses (events from another
    site, a lost projection write), then rolls back projections of commands
    that crashed before their event reached the log (app/store/catchup.py,
    app/store/projections.py).
    """
    repaired = catchup.catch_up_projections(db)
    rolled_back = projections.repair_phantoms(db)
    if repaired or rolled_back:
        log.info("repaired %d lagging projections, rolled back %d", repaired, rolled_back)
    return repaired + rolled_back


def snapshot_stats(db: Database, now: datetime) -> dict[str, Any]:
    """Recount the stats snapshot that /stats serves, so /stats never reduces a whole view.

    Then note a point of the dashboard's throughput history (at most one every
    few minutes), re-rank its members' leaderboard and recount storage per root
    (app/storage/status.py, at most every few minutes), for the same reason.
    """
    snapshot = stats.snapshot_stats(db, now)
    stats.record_history(db, snapshot, now)
    stats.snapshot_leaders(db, now)
    storage_status.snapshot_storage(db, now)  # at most every few minutes
    return snapshot


def stale_peer_reaper(settings: Settings) -> Callable[[Database, datetime], int]:
    """The reap_stale_peers job for these settings (it needs the peers database and interval)."""

    def reap_stale_peers(db: Database, now: datetime) -> int:
        """Drop tracker peers that did not announce within twice the interval; return how many.

        The running tracker forgets them itself; this keeps the stored swarms
        (and so /api/counts) right while no tracker runs.
        """
        peers_db = peersdb.open_peers_database(db, settings)
        if not peers_db.server.database_exists(peers_db.name):
            return 0
        max_age = 2 * settings.tracker.interval_seconds
        reaped = peersdb.reap_stale_peers(peers_db, now=now, max_age_seconds=max_age)
        if reaped:
            log.info("reaped %d stale tracker peers", reaped)
        return reaped

    return reap_stale_peers


def site_replicator(settings: Settings, link: SiteLink) -> Callable[[Database, datetime], Any]:
    """The job that replicates the event log with one site (its id: replicate_<name>)."""

    def replicate(db: Database, now: datetime) -> dict[str, Any]:
        """Run the site's due flows (push, pull); a failing one backs off by itself."""
        return replication.replicate_site(db, link, settings, now)

    replicate.__name__ = f"{SITE_JOB_PREFIX}{link.name}"
    return replicate


SITE_JOB_PREFIX = "replicate_"
