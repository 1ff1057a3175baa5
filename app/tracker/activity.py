"""What the tracker process reads from and records into the event-sourced directory.

At start it loads every tracked/trackeruser/whitelist projection
(`iter_directory_docs`), then follows `_changes?filter=tracker/directory&include_docs=true`
(DIRECTORY_FILTER), which passes exactly those documents. Once per flush it
reports traffic and snatches back through `record_activity`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.couch import Database
from app.events import Decision, Doc, check_none_lost, commit
from app.tracker.accounts import (
    TRACKED,
    TRACKER_USER,
    WHITELIST,
    tracked_doc_id,
    tracker_user_doc_id,
)

TRACKER_ACTOR = "tracker"  # the actor of the events the tracker process records
DIRECTORY_FILTER = "tracker/directory"

# A lost race is repaired and decided again by commit; activity is a fact the
# tracker already answered for, so it gets more attempts than an admin's request.
ACTIVITY_RETRIES = 10


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
    """Record one flush of the tracker: traffic per user, snatches per torrent; one commit.

    transfers = {user_id: (uploaded_delta, downloaded_delta)} and snatches =
    [(info_hash, user_id)], one entry per left>0 -> left=0 transition. Each
    active user with traffic or a snatch gets one `transferred` event, and each
    registered torrent with snatches one `snatched` event. Unknown, deleted or
    unregistered ones record nothing, and a snatch is kept only when both its
    user and its torrent are known (read before the commit, so an admin's
    delete racing this flush may leave one side recorded). Negative deltas
    (a client that restarted its counters) count as 0.

    Lost races are repaired and decided again (ACTIVITY_RETRIES times), then
    ConcurrencyError. On any error (that, or a CouchError) part of the flush
    may be recorded already: with a `batch` id (unique per flush, e.g. a
    uuid4), calling again with the same facts and the same id records only the
    rest, because an aggregate whose last activity carries that id is skipped.
    So retry a failed batch as it was, before recording any newer one on top.
    """
    user_ids = {uid for uid in transfers} | {uid for _, uid in snatches}
    hashes = {ih for ih, _ in snatches}
    ids = [tracker_user_doc_id(u) for u in user_ids] + [tracked_doc_id(ih) for ih in hashes]
    states = db.get_many(ids)
    users = {u for u in user_ids if (states.get(tracker_user_doc_id(u)) or {}).get("active")}
    torrents = {ih for ih in hashes if (states.get(tracked_doc_id(ih)) or {}).get("registered")}
    kept = [(ih, uid) for ih, uid in snatches if uid in users and ih in torrents]
    decisions = _activity_decisions(transfers, kept, users, batch)
    if decisions:
        outcomes = commit(
            db, decisions, actor=TRACKER_ACTOR, now=now, states=states, retry_lost=ACTIVITY_RETRIES
        )
        check_none_lost(outcomes)


def _activity_decisions(
    transfers: Mapping[int, tuple[int, int]],
    kept: list[tuple[str, int]],
    users: set[int],
    batch: str | None,
) -> list[tuple[str, Decision]]:
    snatched_by_user: dict[int, list[str]] = {}
    users_by_torrent: dict[str, list[int]] = {}
    for ih, uid in kept:
        snatched_by_user.setdefault(uid, []).append(ih)
        users_by_torrent.setdefault(ih, []).append(uid)
    tag: dict[str, Any] = {} if batch is None else {"batch": batch}
    decisions: list[tuple[str, Decision]] = []
    for uid in sorted(users):
        up, down = (max(0, int(v)) for v in transfers.get(uid, (0, 0)))
        snatched = snatched_by_user.get(uid, [])
        if up or down or snatched:
            data: dict[str, Any] = {"uploaded": up, "downloaded": down, "snatched": snatched}
            data |= tag
            decisions.append((tracker_user_doc_id(uid), _activity("active", "transferred", data)))
    for ih, uids in sorted(users_by_torrent.items()):
        data = {"users": uids, **tag}
        decisions.append((tracked_doc_id(ih), _activity("registered", "snatched", data)))
    return decisions


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
