"""Peers and one torrent's swarm in memory (app/tracker/swarm.py holds every swarm)."""

from __future__ import annotations

import random
from typing import Any

from app.tracker.protocol import compact_address

Doc = dict[str, Any]


class Peer:
    """One client in one swarm, as of its last announce.

    A dual-stack client announces over IPv4 and IPv6 with one peer id: it is one
    peer with an address in each family (given out in `peers` and `peers6`),
    so its counters and its snatch count once.
    """

    __slots__ = (
        "peer_id",
        "user_id",
        "addr4",
        "addr6",
        "compact4",
        "compact6",
        "left",
        "uploaded",
        "downloaded",
        "last_seen",
        "slot",
        "client",
        "session_down",
    )

    def __init__(self, peer_id: bytes, user_id: int, ip: str, port: int) -> None:
        self.peer_id, self.user_id = peer_id, user_id
        self.addr4: tuple[str, int] | None = None
        self.addr6: tuple[str, int] | None = None
        self.compact4 = self.compact6 = b""
        self.left = self.uploaded = self.downloaded = 0
        self.last_seen = 0.0
        self.slot = 0  # index in its swarm's seeds or leeches list
        self.client = client_name(peer_id)
        self.session_down = 0  # download credited since this client session's baseline
        self.move_to(ip, port)

    def move_to(self, ip: str, port: int) -> bool:
        """Take the address of this announce's family; True when it is new."""
        address = (ip, port)
        if address == self.addr4 or address == self.addr6:
            return False  # the usual re-announce: no address parsing on the hot path
        compact, v6 = compact_address(ip, port)
        if v6:
            if compact == self.compact6:
                return False
            self.addr6, self.compact6 = (ip, port), compact
        else:
            if compact == self.compact4:
                return False
            self.addr4, self.compact4 = (ip, port), compact
        return True

    def addresses(self) -> list[tuple[str, int]]:
        return [a for a in (self.addr4, self.addr6) if a is not None]

    def as_doc(self) -> Doc:
        (ip, port), *more = self.addresses()
        doc: Doc = {
            "user_id": self.user_id,
            "ip": ip,
            "port": port,
            "left": self.left,
            "uploaded": self.uploaded,
            "downloaded": self.downloaded,
            "last_seen": self.last_seen,
            "client": self.client,
            "session_downloaded": self.session_down,
        }
        if more:  # a dual-stack peer: its IPv6 address too
            doc["ip6"], doc["port6"] = more[0]
        return doc


def client_name(peer_id: bytes) -> str:
    """The client part of a peer id, for people reading lists: `-LT2110-`, `A2-1-36-0-`.

    Azureus-style ids (`-XXnnnn-` then random bytes) are cut after the second
    dash; other styles keep their printable head, up to 10 characters.
    """
    if len(peer_id) >= 8 and peer_id[0] == peer_id[7] == 0x2D:
        head = peer_id[:8]
    else:
        head = peer_id[:10]
    end = next((i for i, byte in enumerate(head) if not 0x21 <= byte <= 0x7E), len(head))
    return head[:end].decode("ascii")


class Swarm:
    """The peers of one torrent, kept in two lists (seeders, leechers) for cheap sampling.

    Each peer knows its index in its list, so joining, leaving and becoming a
    seeder are O(1) swaps, and picking `want` peers costs O(want), not
    O(swarm size): a 10,000-peer swarm answers as fast as a 10-peer one.
    """

    __slots__ = ("info_hash", "peers", "seeds", "leeches", "per_user")

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.peers: dict[bytes, Peer] = {}
        self.seeds: list[Peer] = []
        self.leeches: list[Peer] = []
        self.per_user: dict[int, int] = {}  # user_id -> how many of their clients are here

    @property
    def seeders(self) -> int:
        return len(self.seeds)

    @property
    def leechers(self) -> int:
        return len(self.leeches)

    def add(self, peer: Peer) -> None:
        self.peers[peer.peer_id] = peer
        self.per_user[peer.user_id] = self.per_user.get(peer.user_id, 0) + 1
        self._join(peer)

    def remove(self, peer: Peer) -> None:
        del self.peers[peer.peer_id]
        left = self.per_user[peer.user_id] - 1
        if left:
            self.per_user[peer.user_id] = left
        else:
            del self.per_user[peer.user_id]
        self._leave(peer)

    def set_left(self, peer: Peer, left: int) -> bool:
        """Update what the peer has left; True when it turned seeder (or back)."""
        if (left == 0) == (peer.left == 0):
            peer.left = left
            return False
        self._leave(peer)
        peer.left = left
        self._join(peer)
        return True

    def _join(self, peer: Peer) -> None:
        group = self.seeds if peer.left == 0 else self.leeches
        peer.slot = len(group)
        group.append(peer)

    def _leave(self, peer: Peer) -> None:
        group = self.seeds if peer.left == 0 else self.leeches
        last = group.pop()
        if last is not peer:
            group[peer.slot] = last
            last.slot = peer.slot

    def sample(self, asking: Peer | None, want: int) -> list[Peer]:
        """Up to `want` peers other than `asking`, at random; a seeder is given only leechers."""
        if want <= 0:
            return []
        seeding = asking is not None and asking.left == 0
        total = len(self.leeches) if seeding else len(self.peers)
        if total <= want + 1:
            pool = list(self.leeches) if seeding else self.leeches + self.seeds
        else:
            pool = [self._at(i) for i in random.sample(range(total), want + 1)]
        return [p for p in pool if p is not asking][:want]

    def _at(self, index: int) -> Peer:
        """The index-th peer of leeches followed by seeds."""
        leeches = len(self.leeches)
        return self.leeches[index] if index < leeches else self.seeds[index - leeches]

    def as_doc(self) -> Doc:
        return {
            "info_hash": self.info_hash.hex(),
            "seeders": self.seeders,
            "leechers": self.leechers,
            "peers": {pid.hex(): peer.as_doc() for pid, peer in self.peers.items()},
        }
