"""Counts for /stats and `distleech stats`, served from a snapshot.

A reduce over a whole view takes milliseconds on Apache CouchDB but re-reads
every row of the range on the bundled server (100 k rows: ~2.4 s, grouped
~4.7 s). So the figures that grow with the data (albums, download tasks,
per-queue states) come from a snapshot that the scheduler's `snapshot_stats`
job refreshes and stores in `_local/stats-snapshot`: a _local document never
replicates, and each site counts its own copy. Only metadata dispatches are
read live, because "stale" depends on the moment of asking; their view range
holds only outstanding leases, which the workers bound, not the inventory.

The same job keeps what the dashboard (app/web/dashboard.py) draws, each in
one _local document read with one GET: `_local/stats-history`, finished work
per queue kind every few minutes for two days (the throughput chart), and
`_local/stats-leaders`, the tracker members who uploaded most.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from app.queues.albums import QUEUE as METADATA_QUEUE
from app.queues.downloads import DONE
from app.store.couch import CouchUnavailableError, Database, DocumentConflictError
from app.store.events import Doc
from app.timeutil import iso, parse_iso
from app.tracker.accounts import TRACKER_USER

log = logging.getLogger(__name__)

SNAPSHOT_ID = "_local/stats-snapshot"
# Every queue reports these states, zero when empty, so dashboards see stable keys;
# other states ("found", "done", "failed", ...) appear once some work is in them.
QUEUE_STATES = ("ready", "leased")
NO_STATE = "none"

Counts = dict[str, dict[str, int]]


def count_by_type_and_queue(db: Database) -> tuple[Counts, Counts]:
    """Count projections per {type: {state: n}} and per {queue: {state: n}}.

    One grouped reduce over the whole stats/by_type_state view: cheap on
    CouchDB, seconds on the bundled server, hence only in the snapshot job.
    """
    by_type: Counts = {}
    by_queue: Counts = {}
    for row in db.view("stats", "by_type_state", group_level=3):
        doc_type, state, queue = row["key"]
        state_name = state if isinstance(state, str) else NO_STATE
        _add(by_type, str(doc_type), state_name, int(row["value"]))
        if queue:
            _add(by_queue, str(queue), state_name, int(row["value"]))
    return by_type, by_queue


def _add(counts: Counts, group: str, state: str, count: int) -> None:
    states = counts.setdefault(group, {})
    states[state] = states.get(state, 0) + count


def snapshot_stats(db: Database, now: datetime) -> Doc:
    """Count everything and store the counts as the stats snapshot taken at `now`.

    Idempotent: run again, it replaces the snapshot. The scheduler runs it
    every `scheduler.stats_seconds`; /stats runs it only when none exists.
    """
    by_type, by_queue = count_by_type_and_queue(db)
    snapshot = {"_id": SNAPSHOT_ID, "as_of": iso(now), "types": by_type, "queues": by_queue}
    return store_snapshot(db, snapshot)


def store_snapshot(db: Database, snapshot: Doc) -> Doc:
    """Write the snapshot unless a newer one is stored; return the one that stays.

    Two writers (the job and a first /stats call) may race; the later `as_of` wins.
    """
    for _ in range(3):
        current = db.get_or_none(SNAPSHOT_ID)
        if current is not None and current.get("as_of", "") > snapshot["as_of"]:
            return current
        snapshot.pop("_rev", None)
        if current is not None:
            snapshot["_rev"] = current["_rev"]
        try:
            db.put(snapshot)
        except DocumentConflictError:
            continue
        return snapshot
    log.info("stats snapshot kept changing under us; serving the counts without storing them")
    return snapshot


def get_snapshot(db: Database, now: datetime, *, stale: bool = False) -> Doc:
    """The stored snapshot (one GET); computed now only when none exists yet.

    With `stale` (indexes still warming) a missing snapshot is not computed:
    that would wait for a whole index to build. The scheduler writes one soon.
    """
    stored = db.get_or_none(SNAPSHOT_ID)
    if stored is not None:
        return stored
    if stale:
        return {"_id": SNAPSHOT_ID, "as_of": None, "types": {}, "queues": {}}
    return snapshot_stats(db, now)


LIVE_SECONDS = 2.0  # how long /stats waits for the leases index to be current


def count_leases(db: Database, queue: str, now: datetime, *, stale: bool = False) -> dict[str, int]:
    """Split one queue's outstanding leases at `now` into stale and active.

    Stale means expired but not yet reaped (expiry <= now, as the reaper counts
    it); active means not expired. Two small reduces: all of the queue's leases,
    and those up to now; active is the difference.
    """
    total = _reduced_count(db, stale, startkey=[queue], endkey=[queue, {}])
    expired = _reduced_count(db, stale, startkey=[queue], endkey=[queue, iso(now)])
    return {"stale": expired, "active": max(0, total - expired)}


def _reduced_count(db: Database, stale: bool, **params: Any) -> int:
    """One reduce, live when the index answers within LIVE_SECONDS, else as indexed.

    After a big import the index may need minutes to catch up; /stats must
    answer meanwhile (the index goes on building on the server).
    """
    path = f"{db.path}/_design/stats/_view/leases_by_queue"
    if not stale:
        try:
            # idempotent=False: one try, no retries, so the wait is bounded
            response = db.server.request(
                "GET", path, params=params, timeout=LIVE_SECONDS, idempotent=False
            )
            rows = response.json()["rows"]
            return int(rows[0]["value"]) if rows else 0
        except CouchUnavailableError:
            log.info("the leases index is still being built; counting leases as indexed")
    rows = db.view("stats", "leases_by_queue", stale="update_after", **params)
    return int(rows[0]["value"]) if rows else 0


def queue_counts(snapshot: Doc) -> Counts:
    """Per-queue state counts of a snapshot, with every QUEUE_STATES key present."""
    return {
        queue: {**dict.fromkeys(QUEUE_STATES, 0), **states}
        for queue, states in sorted((snapshot.get("queues") or {}).items())
    }


def get_stats(db: Database, now: datetime, *, stale: bool = False) -> dict[str, Any]:
    """The public figures: the original's three lines, per-queue counts, and `as_of`.

    `albums`, `requests` and `queues` are as of the snapshot (`as_of`);
    `dispatches` (metadata leases) is live at `now`, or with `stale` (indexes
    still warming) as of the index, so that /stats never waits for one.
    """
    snapshot = get_snapshot(db, now, stale=stale)
    types = snapshot.get("types") or {}
    tasks = types.get("dltask") or {}
    return {
        "albums": sum((types.get("album") or {}).values()),
        "dispatches": count_leases(db, METADATA_QUEUE, now, stale=stale),
        "requests": {"filled": tasks.get(DONE, 0), "total": sum(tasks.values())},
        "queues": queue_counts(snapshot),
        "as_of": snapshot["as_of"],
    }


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """The lines the original /stats printed, then when the counts were taken."""
    dispatches, requests = stats["dispatches"], stats["requests"]
    return [
        f"Albums: {stats['albums']}",
        f"Metadata dispatches: {dispatches['stale']} stale, {dispatches['active']} active",
        f"Requests: {requests['filled']}/{requests['total']} filled",
        f"As of: {stats['as_of']}",
    ]


def format_stats_text(stats: dict[str, Any]) -> str:
    """The figures of get_stats as plain text lines (for `distleech stats`)."""
    return "\n".join(stats_lines(stats))


# ---------------------------------------------------------------- throughput history

HISTORY_ID = "_local/stats-history"
# One point per HISTORY_EVERY at most, kept for HISTORY_KEEP: 576 small points, one
# document the dashboard's chart reads in one GET (never a reduce per page view).
HISTORY_EVERY = timedelta(minutes=5)
HISTORY_KEEP = timedelta(hours=48)
# Albums end "found", download and URL tasks "done"; only URL tasks end "failed"
# (a cancelled download is the site's doing, not a failure of the work).
DONE_STATES = ("found", "done")
FAILED_STATES = ("failed",)


def queue_kind(queue: str) -> str:
    """The kind of work a queue holds: "download:pth.me" is a "download" queue."""
    return queue.split(":", 1)[0]


def throughput_point(snapshot: Doc) -> Doc:
    """What a history point keeps of a snapshot: finished work per queue kind, cumulative."""
    point: Doc = {"at": snapshot["as_of"], "done": {}, "failed": {}}
    for queue, states in (snapshot.get("queues") or {}).items():
        kind = queue_kind(queue)
        for field, wanted in (("done", DONE_STATES), ("failed", FAILED_STATES)):
            count = sum(states.get(state, 0) for state in wanted)
            point[field][kind] = point[field].get(kind, 0) + count
    return point


def record_history(db: Database, snapshot: Doc, now: datetime) -> bool:
    """Append the snapshot's point to the history unless the last is recent; True if added.

    Called by the scheduler's snapshot job (every `scheduler.stats_seconds`);
    points older than HISTORY_KEEP are dropped. A lost write race is left to
    the next run: a missing point only widens one interval of the chart.
    """
    if not snapshot.get("as_of"):
        return False
    stored = db.get_or_none(HISTORY_ID) or {"_id": HISTORY_ID, "points": []}
    points = stored.get("points") or []
    if points and points[-1]["at"] > iso(parse_iso(snapshot["as_of"]) - HISTORY_EVERY):
        return False
    oldest = iso(now - HISTORY_KEEP)
    stored["points"] = [p for p in points if p["at"] >= oldest] + [throughput_point(snapshot)]
    try:
        db.put(stored)
    except DocumentConflictError:
        log.info("stats history changed under us; the next snapshot adds the point")
        return False
    return True


def get_history(db: Database) -> list[Doc]:
    """The throughput history's points, oldest first (empty before the first snapshot job)."""
    stored = db.get_or_none(HISTORY_ID) or {}
    return list(stored.get("points") or [])


# ---------------------------------------------------------------- members' leaderboard

LEADERS_ID = "_local/stats-leaders"
LEADERS_KEPT = 10


def snapshot_leaders(db: Database, now: datetime) -> Doc:
    """Rank the tracker's active members by bytes uploaded and store the top as of `now`.

    Reads every `trackeruser:` projection (an _all_docs id range, no reduce),
    so the scheduler's snapshot job does it, not a page view.
    """
    members = [
        {
            "name": doc.get("name") or f"member {doc.get('user_id')}",
            "uploaded": int(doc.get("uploaded") or 0),
            "downloaded": int(doc.get("downloaded") or 0),
            "snatches": int(doc.get("snatches") or 0),
        }
        for doc in db.iter_prefix(f"{TRACKER_USER}:")
        if doc.get("active")
    ]
    members.sort(key=lambda m: (-int(m["uploaded"]), -int(m["snatches"]), str(m["name"])))
    leaders = {"_id": LEADERS_ID, "as_of": iso(now), "members": members[:LEADERS_KEPT]}
    stored = db.get_or_none(LEADERS_ID)
    if stored is not None:
        leaders["_rev"] = stored["_rev"]
    try:
        db.put(leaders)
    except DocumentConflictError:
        log.info("members' leaderboard written concurrently; keeping the other copy")
    return leaders


def get_leaders(db: Database, now: datetime) -> Doc:
    """The stored members' leaderboard (one GET); counted now only when none exists yet."""
    return db.get_or_none(LEADERS_ID) or snapshot_leaders(db, now)
