"""The peers database: where the tracker's swarms survive a restart.

Peers are ephemeral and high-churn, so they are not event-sourced and live in
their own database that is never replicated (`tracker.peers_database`, by
default `<couchdb.database>_peers`). One `swarm:<info_hash>` document holds a
whole swarm: the tracker writes behind at most one document per changed swarm
per flush, however many announces it answered, and the web app reads counts
and peer lists from the same documents.

    {"_id": "swarm:<info_hash>", "type": "swarm", "info_hash": "<40 hex>",
     "seeders": 1, "leechers": 0, "updated_at": "<UTC ISO>",
     "peers": {"<peer_id as hex>": {"user_id": 7, "ip": "127.0.0.2", "port": 6881,
               "left": 0, "uploaded": 0, "downloaded": 0, "last_seen": 1763700000.0,
               "client": "-LT2110-"}}}

A client that announced over both IPv4 and IPv6 has `ip6`/`port6` too.

The same database holds the write-behind's current tallies,
`activity:<aggregate>` (format in app/tracker/activity.py): a user's traffic
not yet recorded as a summary event. No view reads them, and the stale-peer
reaper touches only `swarm:` documents.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from app.config import Settings
from app.store.couch import Database, DocumentConflictError
from app.store.designdocs import build_design_docs, sync_design_docs, warm_views
from app.timeutil import iso

Doc = dict[str, Any]
SWARM_PREFIX = "swarm:"


def swarm_doc_id(info_hash: str) -> str:
    return f"{SWARM_PREFIX}{info_hash}"


def peers_database_name(settings: Settings) -> str:
    return settings.tracker.peers_database or f"{settings.couchdb.database}_peers"


def open_peers_database(db: Database, settings: Settings) -> Database:
    """The peers database on the same server (and credentials) as the main one."""
    return db.server.database(peers_database_name(settings))


def init_peers_database(peers_db: Database, *, warm: bool = False) -> list[str]:
    """Create the peers database if missing and sync its design documents (idempotent)."""
    if not peers_db.server.database_exists(peers_db.name):
        try:
            peers_db.server.create_database(peers_db.name)
        except DocumentConflictError:
            pass  # another process created it at the same moment (412 is a conflict)
    docs = build_design_docs(database="peers")
    changed = sync_design_docs(peers_db, docs)
    if warm:
        warm_views(peers_db, docs)
    return changed


def get_swarm(peers_db: Database, info_hash: str) -> Doc | None:
    return peers_db.get_or_none(swarm_doc_id(info_hash))


def list_swarms(peers_db: Database) -> Iterator[Doc]:
    """Every stored swarm document (one _all_docs walk)."""
    yield from peers_db.iter_prefix(SWARM_PREFIX)


def swarm_counts(
    peers_db: Database, info_hashes: Sequence[str] | None = None
) -> dict[str, tuple[int, int]]:
    """(seeders, leechers) by info hash: of these swarms (one keyed read), or of every one."""
    rows = (
        peers_db.view("swarms", "counts", keys=list(info_hashes))
        if info_hashes is not None
        else peers_db.iter_view("swarms", "counts")
    )
    return {row["key"]: (int(row["value"][0]), int(row["value"][1])) for row in rows}


def torrents_of_user(peers_db: Database, user_id: int) -> list[dict[str, Any]]:
    """The swarms a user is in now: [{"info_hash", "seeding"}], one per peer of theirs."""
    rows = peers_db.view("swarms", "by_user", startkey=[user_id], endkey=[user_id, {}])
    return [{"info_hash": row["key"][1], "seeding": bool(row["value"])} for row in rows]


def count_peers(peers: dict[str, Doc]) -> tuple[int, int]:
    """(seeders, leechers) of a swarm's peers: a seeder has nothing left to download."""
    seeders = sum(1 for peer in peers.values() if peer.get("left") == 0)
    return seeders, len(peers) - seeders


def reap_stale_peers(peers_db: Database, *, now: datetime, max_age_seconds: float) -> int:
    """Drop peers not heard from within max_age_seconds; return how many went.

    The running tracker drops them from memory itself; this job is what keeps
    stored counts right while no tracker runs. A conflict means the tracker
    just rewrote that swarm, with its own fresher view: leave it.
    """
    cutoff = now.timestamp() - max_age_seconds
    reaped, updates = 0, []
    for doc in list_swarms(peers_db):
        peers = doc.get("peers") or {}
        alive = {pid: p for pid, p in peers.items() if float(p.get("last_seen", 0)) >= cutoff}
        if len(alive) == len(peers):
            continue
        reaped += len(peers) - len(alive)
        if alive:
            seeders, leechers = count_peers(alive)
            updates.append(
                {**doc, "peers": alive, "seeders": seeders, "leechers": leechers}
                | {"updated_at": iso(now)}
            )
        else:
            updates.append({"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True})
    if updates:
        peers_db.bulk_docs(updates)
    return reaped
