"""The scheduler process (`distleech scheduler`): periodic jobs behind a leader lease.

Exactly one copy per site runs jobs: every copy builds the same APScheduler
BackgroundScheduler, starts it paused, and resumes it only while it holds the
leader lease (see scheduler.leader); a waiting copy keeps polling. Each job
also checks the lease itself before it runs, because pausing the scheduler
does not stop a run that has already been handed to an executor. Never
start this inside web workers: each would run its own copy.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from app import connect, sources, stream
from app.config import ConfigError, Settings
from app.projectors import register_projectors
from app.sites.links import site_links
from app.store.couch import CouchError, Database
from app.store.setup import init_database
from app.timeutil import Clock, utcnow
from scheduler import jobs
from scheduler.leader import Leader

log = logging.getLogger(__name__)

Job = Callable[[Database, datetime], Any]


def job_intervals(settings: Settings) -> list[tuple[Job, float]]:
    """Every job with its interval in seconds, from the `scheduler` config section."""
    section = settings.scheduler
    return [
        (jobs.reap_expired_leases, section.reap_seconds),
        (jobs.catch_up_projections, section.projector_seconds),
        (jobs.snapshot_stats, section.stats_seconds),
        (jobs.stale_peer_reaper(settings), section.reap_seconds),
        *sources.scheduled_jobs(settings),
        *stream.scheduled_jobs(settings),
    ] + site_jobs(settings)


def site_jobs(settings: Settings) -> list[tuple[Job, float]]:
    """One replication job per configured site."""
    seconds = settings.scheduler.replicate_seconds
    return [(jobs.site_replicator(settings, link), seconds) for link in site_links(settings)]


def run_if_leader(job: Job, db: Database, leader: Leader, clock: Clock = utcnow) -> Any:
    """Run one job at the clock's now if this process holds the lease; else skip it (None)."""
    now = clock()
    if not leader.holds(now):
        log.debug("skipping %s: this copy does not hold the scheduler lease", job.__name__)
        return None
    return job(db, now)


def build_scheduler(
    settings: Settings, db: Database, *, leader: Leader | None = None, clock: Clock = utcnow
) -> BaseScheduler:
    """A stopped BackgroundScheduler holding every job, each guarded by the leader lease.

    Jobs are added with id = function name, replace_existing, coalesce and
    max_instances=1 (STYLE.md section 7). misfire_grace_time=None lets a run
    that fell due while the copy was paused (waiting for the lease) run once
    on takeover instead of being dropped as missed.
    """
    register_projectors()  # catch-up and phantom repair replay every aggregate type
    if leader is None:
        leader = Leader(db, lease_seconds=settings.scheduler.leader_lease_seconds)
    scheduler = BackgroundScheduler(timezone=UTC)
    for job, seconds in job_intervals(settings):
        _add_job(scheduler, job, seconds, db, leader, clock)
    return scheduler


def _add_job(
    scheduler: BaseScheduler, job: Job, seconds: float, db: Database, leader: Leader, clock: Clock
) -> None:
    scheduler.add_job(
        run_if_leader,
        "interval",
        seconds=seconds,
        args=[job, db, leader, clock],
        id=job.__name__,
        name=job.__name__,
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
    )


def sync_site_jobs(
    scheduler: BaseScheduler, settings: Settings, db: Database, leader: Leader, clock: Clock
) -> None:
    """Make the replication jobs match `settings.sites`: sites added or changed in the
    config start replicating, removed ones stop, without restarting anything."""
    wanted = dict((job.__name__, (job, seconds)) for job, seconds in site_jobs(settings))
    for existing in scheduler.get_jobs():
        if existing.id.startswith(jobs.SITE_JOB_PREFIX) and existing.id not in wanted:
            scheduler.remove_job(existing.id)
            log.info("stopped replicating with site %s", existing.id[len(jobs.SITE_JOB_PREFIX) :])
    for job, seconds in wanted.values():
        _add_job(scheduler, job, seconds, db, leader, clock)  # replaces: picks up a new link


def follow_leadership(scheduler: BaseScheduler, leader: Leader, now: datetime) -> bool:
    """Take or renew the lease, then resume (leader) or pause (waiting) the jobs.

    When CouchDB cannot be reached, the lease we hold is still ours until it
    expires (nobody else can take it earlier), so the scheduler follows
    `leader.holds(now)`.
    """
    try:
        leading = leader.acquire(now)
    except CouchError as exc:
        log.warning("cannot renew the scheduler lease: %s", exc)
        leading = leader.holds(now)
    if leading:
        scheduler.resume()
    else:
        scheduler.pause()
    return leading


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGINT/SIGTERM while inside the block (main thread only).

    Shared by the long-running commands (`distleech scheduler`, `distleech amqp
    bridge`): each ends its current step and closes its connections.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_scheduler(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    reload: Callable[[], Settings] | None = None,
) -> None:
    """Run the scheduler until SIGINT/SIGTERM (or `stop`): wait for the lease, run jobs.

    A clean stop shuts the scheduler down (waiting for running jobs) and then
    releases the lease, so jobs never run unleased and a waiting copy takes
    over at its next poll instead of after the lease expires. With `reload`,
    the configuration is read again at every poll and a change of `sites:`
    takes effect at once (a bad file is logged and the last good one kept).
    """
    if not settings.scheduler.enabled:
        log.warning("scheduler.enabled is false: not running any jobs")
        return
    db = connect(settings, pool_size=8)
    init_database(db)
    leader = Leader(db, lease_seconds=settings.scheduler.leader_lease_seconds)
    scheduler = build_scheduler(settings, db, leader=leader)
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        scheduler.start(paused=True)
        log.info("scheduler %s started; waiting for the lease", leader.holder)
        try:
            while True:
                follow_leadership(scheduler, leader, utcnow())
                if reload is not None:
                    settings = _follow_config(scheduler, settings, reload, db, leader)
                if stop.wait(leader.renew_seconds):
                    break
        finally:
            scheduler.shutdown(wait=True)
            _release_quietly(leader)


def _follow_config(
    scheduler: BaseScheduler,
    settings: Settings,
    reload: Callable[[], Settings],
    db: Database,
    leader: Leader,
) -> Settings:
    """Apply a changed `sites:` section; return the settings now in force."""
    try:
        fresh = reload()
    except (ConfigError, OSError, ValueError) as exc:  # unreadable, undecodable, invalid
        log.warning("config not reloaded, keeping the last good one: %s", exc)
        return settings
    if (fresh.sites, fresh.scheduler) != (settings.sites, settings.scheduler):
        sync_site_jobs(scheduler, fresh, db, leader, utcnow)
        log.info("sites now: %s", ", ".join(fresh.sites) or "none")
    return fresh


def _release_quietly(leader: Leader) -> None:
    """Release on the way out; if CouchDB is gone, the lease simply expires."""
    try:
        leader.release(utcnow())
    except CouchError as exc:
        log.warning("could not release the scheduler lease (it will expire): %s", exc)
