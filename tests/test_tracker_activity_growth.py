"""How much the event log grows with the tracker's traffic (the README's figure comes from here).

A simulated day of 100 active users through the real write-behind: every user
moves data in every hour and stops their client once, at their own time of
day; 1 in 10 completes a torrent each hour. Run with `-s` to print the figure:
bytes are the JSON of the documents the log gained (what replication carries
and Apache CouchDB counts as `sizes.external`), whatever their layout.
"""

import json

from app.store.events import event_log, read_events
from app.tracker import accounts, members, peersdb
from app.tracker.swarm import Flush
from app.tracker.writer import WriteBehind

USERS, IH = 100, "ef" * 20


def log_bytes(db) -> tuple[int, int]:
    """(documents, bytes of their JSON) in the event log, design documents left out."""
    log = event_log(db)
    docs = [d for d in log.iter_prefix("") if not d["_id"].startswith("_design/")]
    return len(docs), sum(len(json.dumps(d, separators=(",", ":"))) for d in docs)


def test_a_day_of_1000_users_adds_a_few_megabytes_to_the_log(db, make_app, clock):
    peers_db = peersdb.open_peers_database(db, make_app().extensions["distleech"].settings)
    accounts.register_torrent(db, IH, 1, "Album", actor="test", now=clock())
    for user in range(USERS):
        members.register_user(db, user, name=f"u{user}", actor="test", now=clock())
    before_docs, before_bytes = log_bytes(db)
    writer = WriteBehind(db, peers_db, clock=clock)
    start = clock()
    for hour in range(24):
        for flush in range(USERS):  # each user announces in a flush of their own
            clock.now = start.replace(hour=hour, minute=flush % 60, second=flush // 60 + 1)
            snatch = [(IH, flush)] if (flush + hour) % 10 == 0 else []
            stopped = {flush} if flush % 24 == hour else set()
            assert writer.write(Flush({}, {flush: (7_340_032_000, 1_048_576_000)}, snatch, stopped))
    clock.now = start.replace(day=start.day + 1)
    assert writer.write(Flush({}, {}, []))

    docs, grown = log_bytes(db)
    summaries = sum(
        1
        for user in range(USERS)
        for event in read_events(db, accounts.tracker_user_doc_id(user))
        if event["name"] == "transferred"
    )
    per_1000_users = (grown - before_bytes) * 1000 // USERS
    print(  # noqa: T201 - the figure the README quotes; shown with `pytest -s`
        f"\nevent log: {docs - before_docs} documents, {grown - before_bytes} bytes for "
        f"{summaries} user summaries of {USERS} users in a day: "
        f"{(grown - before_bytes) / summaries:.0f} bytes per summary (torrent summaries "
        f"included), {per_1000_users / 1e6:.2f} MB per 1,000 active users per day"
    )
    assert 24 * USERS <= summaries <= 25 * USERS  # one per user and hour, plus the stop
    assert per_1000_users < 20e6
