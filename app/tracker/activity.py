"""What the tracker process reads from and records into the event-sourced directory.

At start it loads every tracked/trackeruser/whitelist projection
(`iter_directory_docs`), then follows `_changes?filter=tracker/directory&include_docs=true`
(DIRECTORY_FILTER), which passes exactly those documents.

Traffic is recorded as facts worth keeping, not as traffic: a summary event
per user and hour (`transferred` {uploaded, downloaded, snatched, batch, from,
until, reason}), one more when a client of theirs stops (its session is closed
out at once), and per torrent at the flush that saw its snatches (`snatched`
{users, …}); see
app.tracker.writer for when they close. Until a summary is recorded, its
running total (a *tally*) lives in the peers database as `activity:<aggregate
id>`, rewritten by the write-behind at each flush in which it changed:

    {"_id": "activity:trackeruser:7", "type": "activity", "aggregate": "trackeruser:7",
     "open": {"batch": "<id>", "from": "<UTC ISO>", "uploaded": 10, "downloaded": 0,
              "snatched": ["<info hash>"]},
     "closing": null | {the same, "until": "<UTC ISO>", "reason": "hour"|"stopped"|"shutdown"},
     "peers": {"<info hash>/<peer id>": [uploaded, downloaded, session_downloaded, last_seen]},
     "updated_at": "<UTC ISO>"}

Why a tally in the peers database rather than totals that lag by an hour:
users' totals (GET /api/user/<id>) and snatch counts (/api/counts) stay
current (`current_user`, `current_counts` add what is not recorded yet) while
the log grows by one event per active user and hour; and a crash loses at
most the last flush, not the hour, because the restarted tracker carries on
from the stored tally. Each tally's `batch` id becomes its event's `batch`,
which the projection keeps as `last_batch`: a summary retried after a crash is
recorded once, and a reader that reads the tally *before* the projection
counts it exactly once (added when the projection does not carry its id yet).
`peers` holds the counters of the user's peers that moved since their swarm
document was stored (app.tracker.swarm), so that a restored peer is not
credited again for traffic its tally already holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.store.commit import check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.tracker.accounts import (
    TRACKED,
    TRACKER_USER,
    WHITELIST,
    list_tracked_torrents,
    tracked_doc_id,
    tracker_user_doc_id,
)
from app.tracker.members import get_tracker_user

TRACKER_ACTOR = "tracker"  # the actor of the events the tracker process records
DIRECTORY_FILTER = "tracker/directory"

# A lost race is repaired and decided again by commit; activity is a fact the
# tracker already answered for, so it gets more attempts than an admin's request.
ACTIVITY_RETRIES = 10
ACTIVITY_PREFIX = "activity:"  # tallies in the peers database: `activity:<aggregate id>`
USER_PREFIX, TORRENT_PREFIX = f"{TRACKER_USER}:", f"{TRACKED}:"


def iter_directory_docs(db: Database) -> Iterator[Doc]:
    """Every projection the tracker loads at start: tracked, trackeruser and whitelist docs.

    Inactive ones (unregistered, deleted, removed) come too, so that a
    follower of the directory filter handles both the same way; after this
    walk, follow `_changes?filter=tracker/directory&include_docs=true` from the
    `update_seq` read before it, so that nothing changed during the walk is missed.
    """
    for doc_type in (TRACKED, TRACKER_USER, WHITELIST):
        for doc in db.iter_prefix(f"{doc_type}:"):
            if doc.get("type") == doc_type:
                yield doc


def record_activity(
    db: Database,
    transfers: Mapping[int, tuple[int, int]],
    snatches: Sequence[tuple[str, int]],
    *,
    now: datetime,
    batch: str | None = None,
) -> None:
    """Record traffic per user and snatches per torrent, all with one batch id; one commit.

    transfers = {user_id: (uploaded_delta, downloaded_delta)} and snatches =
    [(info_hash, user_id)], one entry per snatch. The form of `record_summaries`
    for facts gathered together (tests, tools); the tracker records tallies.
    """
    summaries: dict[str, Doc] = {}
    tag: Doc = {} if batch is None else {"batch": batch}
    for uid, (up, down) in transfers.items():
        summaries[tracker_user_doc_id(uid)] = {"uploaded": up, "downloaded": down, "snatched": []}
    for ih, uid in snatches:
        user = summaries.setdefault(
            tracker_user_doc_id(uid), {"uploaded": 0, "downloaded": 0, "snatched": []}
        )
        user["snatched"].append(ih)
        summaries.setdefault(tracked_doc_id(ih), {"users": []})["users"].append(uid)
    record_summaries(db, {aggregate: data | tag for aggregate, data in summaries.items()}, now=now)


def record_summaries(db: Database, summaries: Mapping[str, Doc], *, now: datetime) -> None:
    """Record tallies as events, one commit: `transferred` per user, `snatched` per torrent.

    summaries = {"trackeruser:<id>": {uploaded, downloaded, snatched: [info hash, …], …},
    "tracked:<info hash>": {users: [user id, …], …}}; other keys (batch, from,
    until, reason) go into the event as they are. Unknown, deleted or
    unregistered aggregates record nothing, a snatch is kept only when both its
    user and its torrent are known (read before the commit, so an admin's
    delete racing this may leave one side recorded), and a summary left with
    nothing to say is not recorded. Negative amounts count as 0.

    Lost races are repaired and decided again (ACTIVITY_RETRIES times), then
    ConcurrencyError. On any error (that, or a CouchError) part may be
    recorded already: a summary with a `batch` id is skipped by an aggregate
    whose last activity carries that id, so retry with the same facts and ids,
    before recording anything newer for the same aggregate on top.
    """
    users = {int(a[len(USER_PREFIX) :]) for a in summaries if a.startswith(USER_PREFIX)}
    hashes = {a[len(TORRENT_PREFIX) :] for a in summaries if a.startswith(TORRENT_PREFIX)}
    for data in summaries.values():
        hashes.update(data.get("snatched", ()))
        users.update(data.get("users", ()))
    ids = [tracker_user_doc_id(u) for u in users] + [tracked_doc_id(ih) for ih in hashes]
    states = db.get_many(ids)
    active = {u for u in users if (states.get(tracker_user_doc_id(u)) or {}).get("active")}
    registered = {h for h in hashes if (states.get(tracked_doc_id(h)) or {}).get("registered")}
    decisions: list[tuple[str, Decision]] = []
    for aggregate, data in sorted(summaries.items()):
        if aggregate.startswith(USER_PREFIX) and int(aggregate[len(USER_PREFIX) :]) in active:
            up, down = (max(0, int(data.get(k, 0))) for k in ("uploaded", "downloaded"))
            snatched = [ih for ih in data.get("snatched", ()) if ih in registered]
            if up or down or snatched:
                kept = data | {"uploaded": up, "downloaded": down, "snatched": snatched}
                decisions.append((aggregate, _activity("active", "transferred", kept)))
        elif (
            aggregate.startswith(TORRENT_PREFIX) and aggregate[len(TORRENT_PREFIX) :] in registered
        ):
            snatchers = [uid for uid in data.get("users", ()) if uid in active]
            if snatchers:
                kept = data | {"users": snatchers}
                decisions.append((aggregate, _activity("registered", "snatched", kept)))
    if decisions:
        outcomes = commit(
            db, decisions, actor=TRACKER_ACTOR, now=now, states=states, retry_lost=ACTIVITY_RETRIES
        )
        check_none_lost(outcomes)


def _activity(flag: str, name: str, data: dict[str, Any]) -> Decision:
    """Record (name, data) while the aggregate's `flag` holds and its batch is not in yet.

    Decided again after a lost race, on the state repaired from events.
    """

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if not state or not state.get(flag):
            return None
        if "batch" in data and state.get("last_batch") == data["batch"]:
            return None  # recorded by an earlier attempt of the same flush
        return name, data

    return decide


# ---------------------------------------------------------------- tallies


def activity_doc_id(aggregate: str) -> str:
    return f"{ACTIVITY_PREFIX}{aggregate}"


def new_tally(aggregate: str, since: str) -> Doc:
    """An empty running total for a user (traffic, snatched) or a torrent (users)."""
    tally: Doc = {"batch": uuid.uuid4().hex, "from": since}
    if aggregate.startswith(USER_PREFIX):
        return tally | {"uploaded": 0, "downloaded": 0, "snatched": []}
    return tally | {"users": []}


def unrecorded(pending: Doc | None, projection: Doc | None) -> list[Doc]:
    """The tallies of an activity document that its aggregate's projection does not hold yet.

    Read the activity document first, the projection after it: a tally
    recorded in between then shows up in the projection with its batch id,
    and is not counted twice.
    """
    last = (projection or {}).get("last_batch")
    tallies = [(pending or {}).get("closing"), (pending or {}).get("open")]
    return [t for t in tallies if t and t.get("batch") != last]


def current_user(db: Database, peers_db: Database, user_id: int) -> Doc:
    """An active user's projection with the traffic and snatches not recorded yet added."""
    pending = peers_db.get_or_none(activity_doc_id(tracker_user_doc_id(user_id)))
    doc = dict(get_tracker_user(db, user_id))
    for tally in unrecorded(pending, doc):
        doc["uploaded"] += tally["uploaded"]
        doc["downloaded"] += tally["downloaded"]
        doc["snatches"] += len(tally["snatched"])
    return doc


def current_counts(db: Database, peers_db: Database) -> list[Doc]:
    """`list_tracked_torrents` with the snatches not recorded yet added.

    Torrents with a tally take their count from their projection, read after
    the tally (the view may be fresher than the tally's read).
    """
    pending = {
        doc["aggregate"]: doc
        for doc in peers_db.iter_prefix(f"{ACTIVITY_PREFIX}{TORRENT_PREFIX}")
        if doc.get("type") == "activity"
    }
    listed = list_tracked_torrents(db)
    projections = db.get_many(pending)
    for entry in listed:
        aggregate = tracked_doc_id(entry["info_hash"])
        if aggregate in pending and aggregate in projections:
            projection = projections[aggregate]
            tallies = unrecorded(pending[aggregate], projection)
            entry["snatches"] = projection["snatches"] + sum(len(t["users"]) for t in tallies)
    return listed
