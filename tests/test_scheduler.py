"""The scheduler: leader lease, job registration, and each job called with a fixed now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from conftest import START
from factories import append_change, make_albums

from app.config import load_settings
from app.queues.albums import album_doc_id
from app.queues.leasing import QueueLeaser
from app.timeutil import iso
from scheduler import build_scheduler, follow_leadership, jobs, run_if_leader
from scheduler.leader import LEADER_DOC_ID, Leader

ROOT = Path(__file__).resolve().parent.parent
LEASE = 30


def settings_for(db, **scheduler):
    return load_settings(
        {"couchdb": {"url": db.server_url, "database": db.name}, "scheduler": scheduler},
        config_path=Path("/nonexistent/config.yaml"),
        environ={},
    )


def leader(db, name):
    return Leader(db, lease_seconds=LEASE, holder=name)


# ---------------------------------------------------------------- leader lease


def test_only_one_copy_acquires_the_lease(db):
    first, second = leader(db, "a"), leader(db, "b")
    assert first.acquire(START)
    assert not second.acquire(START)
    assert first.holds(START) and not second.holds(START)
    doc = db.get(LEADER_DOC_ID)
    assert doc["type"] == "lease" and doc["holder"] == "a"
    assert doc["expires_at"] == iso(START + timedelta(seconds=LEASE))


def test_concurrent_copies_get_exactly_one_leader(db):
    copies = [leader(db, f"copy-{i}") for i in range(6)]
    barrier = threading.Barrier(len(copies))
    results = {}

    def race(copy):
        barrier.wait()
        results[copy.holder] = copy.acquire(START)

    threads = [threading.Thread(target=race, args=(c,)) for c in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, won in results.items() if won]
    assert len(winners) == 1
    assert db.get(LEADER_DOC_ID)["holder"] == winners[0]


def test_renewal_keeps_the_lease_from_a_waiting_copy(db):
    holder, waiting = leader(db, "a"), leader(db, "b")
    assert holder.acquire(START)
    # the holder renews every lease/3; the waiting copy polls past the first expiry
    assert holder.acquire(START + timedelta(seconds=LEASE / 3))
    assert not waiting.acquire(START + timedelta(seconds=LEASE + 1))
    assert holder.holds(START + timedelta(seconds=LEASE + 1))


def test_a_waiting_copy_takes_over_after_expiry(db):
    holder, waiting = leader(db, "a"), leader(db, "b")
    assert holder.acquire(START)
    later = START + timedelta(seconds=LEASE)
    # the holder stopped renewing (crashed, or cut off from CouchDB)
    assert not holder.holds(later)
    assert waiting.acquire(later)
    # the old holder comes back: it sees the new holder and steps down
    assert not holder.acquire(later + timedelta(seconds=1))
    assert db.get(LEADER_DOC_ID)["holder"] == "b"


def test_release_lets_the_waiting_copy_in_at_once(db):
    holder, waiting = leader(db, "a"), leader(db, "b")
    assert holder.acquire(START)
    assert not waiting.acquire(START)
    assert holder.release(START + timedelta(seconds=1))
    assert not holder.holds(START + timedelta(seconds=1))
    assert waiting.acquire(START + timedelta(seconds=2))


def test_releasing_never_frees_someone_elses_lease(db):
    holder, other = leader(db, "a"), leader(db, "b")
    assert holder.acquire(START)
    assert not other.release(START)
    assert db.get(LEADER_DOC_ID)["holder"] == "a"
    assert not other.acquire(START)


def test_the_lease_document_is_counted_nowhere(db):
    """Ephemeral coordination state: no stats, queue or lease view sees it."""
    assert leader(db, "a").acquire(START)
    snapshot = jobs.snapshot_stats(db, START)
    assert "lease" not in snapshot["types"]
    assert db.view("queues", "leases_by_expiry", reduce=False) == []


# ---------------------------------------------------------------- the scheduler


def test_jobs_are_registered_by_name_with_the_configured_intervals(db):
    settings = settings_for(db, reap_seconds=7, projector_seconds=3, stats_seconds=11)
    scheduler = build_scheduler(settings, db)
    registered = {job.id: job for job in scheduler.get_jobs()}
    assert set(registered) == {
        "reap_expired_leases",
        "catch_up_projections",
        "snapshot_stats",
        "reap_stale_peers",
        "queue_due_syncs",
        "deliver_webhooks",
    }
    intervals = {name: job.trigger.interval for name, job in registered.items()}
    assert intervals == {
        "reap_expired_leases": timedelta(seconds=7),
        "reap_stale_peers": timedelta(seconds=7),
        "catch_up_projections": timedelta(seconds=3),
        "snapshot_stats": timedelta(seconds=11),
        "queue_due_syncs": timedelta(seconds=60),  # sources.schedule_seconds
        "deliver_webhooks": timedelta(seconds=5),  # events.webhook_seconds
    }
    assert all(job.coalesce and job.max_instances == 1 for job in registered.values())


def test_a_job_runs_only_while_its_copy_holds_the_lease(db, clock):
    calls = []

    def job(database, now):
        calls.append(now)
        return "ran"

    job.__name__ = "probe"
    copy = leader(db, "a")
    assert run_if_leader(job, db, copy, clock) is None
    assert copy.acquire(clock())
    assert run_if_leader(job, db, copy, clock) == "ran"
    clock.advance(seconds=LEASE)  # not renewed in time
    assert run_if_leader(job, db, copy, clock) is None
    assert calls == [START]


@pytest.fixture
def two_copies(db, clock):
    """Two scheduler copies on one database, started paused as run_scheduler starts them."""
    # intervals far longer than the test, so no job fires while it runs
    settings = settings_for(db, reap_seconds=3600, projector_seconds=3600, stats_seconds=3600)
    copies = [leader(db, "a"), leader(db, "b")]
    schedulers = [build_scheduler(settings, db, leader=c, clock=clock) for c in copies]
    for scheduler in schedulers:
        scheduler.start(paused=True)
    yield copies, schedulers
    for scheduler in schedulers:
        scheduler.shutdown(wait=True)


def test_only_the_leading_copy_resumes_its_jobs(two_copies, clock):
    copies, schedulers = two_copies
    assert follow_leadership(schedulers[0], copies[0], clock())
    assert not follow_leadership(schedulers[1], copies[1], clock())
    assert [s.state for s in schedulers] == [STATE_RUNNING, STATE_PAUSED]
    # past the lease without renewing: the first copy lost it, the second takes it
    later = clock.advance(seconds=LEASE)
    assert follow_leadership(schedulers[1], copies[1], later)
    assert not follow_leadership(schedulers[0], copies[0], later)
    assert [s.state for s in schedulers] == [STATE_PAUSED, STATE_RUNNING]


def test_a_released_lease_moves_the_jobs_to_the_waiting_copy(two_copies, clock):
    copies, schedulers = two_copies
    assert follow_leadership(schedulers[0], copies[0], clock())
    assert not follow_leadership(schedulers[1], copies[1], clock())
    copies[0].release(clock())
    assert follow_leadership(schedulers[1], copies[1], clock.advance(seconds=1))
    assert schedulers[1].state == STATE_RUNNING


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_the_scheduler_process_holds_the_lease_and_releases_it_on_sigterm(db):
    env = dict(
        os.environ,
        DISTLEECH_CONFIG="/nonexistent/config.yaml",
        DISTLEECH_COUCHDB__URL=db.server_url,
        DISTLEECH_COUCHDB__DATABASE=db.name,
        DISTLEECH_SCHEDULER__LEADER_LEASE_SECONDS="30",
    )
    if user := os.environ.get("TEST_COUCHDB_USER"):  # a real CouchDB with credentials
        env["DISTLEECH_COUCHDB__USERNAME"] = user
        env["DISTLEECH_COUCHDB__PASSWORD"] = os.environ.get("TEST_COUCHDB_PASSWORD", "")
    code = (
        "from app.config import load_settings\n"
        "from scheduler import run_scheduler\n"
        "run_scheduler(load_settings())\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        # the process takes the lease; a second copy (this test) has to wait
        assert _wait_for(lambda: (db.get_or_none(LEADER_DOC_ID) or {}).get("holder"))
        assert not Leader(db, lease_seconds=LEASE, holder="second").acquire(datetime.now(UTC))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the clean stop released the lease, so a waiting copy takes over at once
    assert db.get(LEADER_DOC_ID)["holder"] is None


# ---------------------------------------------------------------- the jobs


def test_reap_job_returns_an_expired_album_lease_to_the_queue(db):
    [album_id] = make_albums(db, 1, now=START)
    leaser = QueueLeaser(db)
    assert leaser.lease("metadata", "w1", 1, START, timedelta(hours=1), actor="w1")
    # before expiry the reaper leaves the lease alone
    assert jobs.reap_expired_leases(db, START + timedelta(minutes=59)) == 0
    assert db.get(album_doc_id(album_id))["state"] == "leased"
    # after expiry it goes back to the queue and can be leased again
    assert jobs.reap_expired_leases(db, START + timedelta(minutes=61)) == 1
    album = db.get(album_doc_id(album_id))
    assert album["state"] == "ready" and album["lease"] is None
    again = leaser.lease(
        "metadata", "w2", 1, START + timedelta(minutes=62), timedelta(hours=1), "w2"
    )
    assert [doc["_id"] for doc in again] == [album_doc_id(album_id)]
    # running it again changes nothing
    assert jobs.reap_expired_leases(db, START + timedelta(minutes=63)) == 0


def test_projector_job_heals_a_projection_whose_write_was_lost(db):
    [album_id] = make_albums(db, 1, now=START)
    aggregate = album_doc_id(album_id)
    expires = START + timedelta(hours=1)
    # the event is stored, the projection is not (a lost write, or another site's event)
    lease = {"holder": "w1", "expires_at": iso(expires)}
    append_change(db, aggregate, 2, "leased", lease, actor="w1", now=START)
    assert db.get(aggregate)["version"] == 1
    assert jobs.catch_up_projections(db, START) >= 1
    healed = db.get(aggregate)
    assert healed["version"] == 2 and healed["state"] == "leased"
    assert healed["lease"]["holder"] == "w1"
    # caught up: a second run has nothing to repair
    assert jobs.catch_up_projections(db, START) == 0
