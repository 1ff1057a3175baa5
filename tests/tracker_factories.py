"""Helpers for the tracker tests: swarm documents written in the tracker's own storage
format (see app/tracker/peersdb.py)."""

from __future__ import annotations

from app.timeutil import iso
from app.tracker import peersdb


def make_swarm(peers_db, info_hash, peers, *, now):
    """Write a swarm document as the tracker's write-behind does: peers by hex peer id.

    `peers` maps a peer id (text, hex-encoded here) to overrides of a default peer.
    """
    stored = {}
    for index, (peer_id, fields) in enumerate(peers.items()):
        stored[peer_id.encode().hex()] = {
            "user_id": 1,
            "ip": f"127.0.0.{index + 2}",
            "port": 6881 + index,
            "left": 0,
            "uploaded": 0,
            "downloaded": 0,
            "last_seen": now.timestamp(),
            "client": peer_id[:8],
        } | fields
    seeders, leechers = peersdb.count_peers(stored)
    doc = {
        "_id": peersdb.swarm_doc_id(info_hash),
        "type": "swarm",
        "info_hash": info_hash,
        "seeders": seeders,
        "leechers": leechers,
        "updated_at": iso(now),
        "peers": stored,
    }
    peers_db.put(doc)
    return doc
