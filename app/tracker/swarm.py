"""Swarms in memory: who is in which torrent, what changed since the last flush.

One tracker process owns this state and is its only writer, so announces never
wait on CouchDB: they update memory, and `drain()` hands what changed to the
write-behind (app.tracker.writer) about once a second — the swarms to store,
each user's transfer deltas, the snatches seen, the users whose client stopped,
and the counters of peers that moved since their swarm was last stored.

A swarm whose membership changed (a peer joined, left, turned seeder or moved)
is stored at the next drain; one where peers only re-announced (new counters
and last-seen times) waits for a `full` drain (`tracker.refresh_seconds`).
Counts and peer lists are therefore never more than a flush late, and a busy
tracker does not rewrite every swarm every second. So that a crash cannot
credit a stretch of traffic twice (a restored peer whose stored counters are a
refresh old would), the counters of every peer that moved since its swarm was
last stored go out with each drain (`Flush.fresh`, per user) and are written
beside the user's running totals (app.tracker.activity); restore takes the newer.

What is credited (BEP 3: `uploaded`/`downloaded` count from the client's
`started`): a peer's first announce, and any `started`, only sets its baseline,
whatever counters it sends (a WebTorrent seeder starts with the size of the
data it checked as `downloaded`). After that each announce credits the growth
of its counters; a counter that fell means the client restarted without saying
so, and counts from zero. A snatch is `left > 0` going to `left = 0` (rtorrent
never sends `completed`, WebTorrent sends it when it starts as a seeder), and
only when the peer was credited some download in this session: ctorrent seeding
announces `started` with `left > 0` before it has checked its files, then
`left = 0` with nothing downloaded, which is no snatch.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from app.tracker.peers import Peer, Swarm

Doc = dict[str, Any]


def counters_key(info_hash: bytes, peer_id: bytes) -> str:
    """How a peer is named among a user's fresh counters: `<info hash hex>/<peer id hex>`."""
    return f"{info_hash.hex()}/{peer_id.hex()}"


@dataclasses.dataclass
class Flush:
    """What changed since the last drain: the write-behind's unit of work."""

    swarms: dict[str, Doc | None]  # info hash hex -> swarm doc body, None when it emptied
    transfers: dict[int, tuple[int, int]]  # user_id -> (uploaded, downloaded) deltas
    snatches: list[tuple[str, int]]  # (info hash hex, user_id)
    stopped: set[int] = dataclasses.field(default_factory=set)  # users a client of whom stopped
    # user_id -> every counters_key -> [uploaded, downloaded, session_downloaded, last_seen]
    # of their peers that moved since their swarm was stored; only users whose set changed
    fresh: dict[int, dict[str, list[float]]] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.swarms or self.transfers or self.snatches or self.stopped or self.fresh)


@dataclasses.dataclass(slots=True)
class Credit:
    """What one announce changed for its user and its torrent."""

    uploaded: int = 0
    downloaded: int = 0
    snatched: bool = False


class Swarms:
    """Every swarm this tracker knows, and the changes not yet written behind."""

    def __init__(self) -> None:
        self.swarms: dict[bytes, Swarm] = {}
        self._dirty: set[bytes] = set()  # membership changed: store at the next drain
        self._touched: set[bytes] = set()  # only counters and times changed: a full drain
        self._transfers: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._snatches: list[tuple[str, int]] = []
        self._stopped: set[int] = set()
        self._fresh: dict[int, dict[str, list[float]]] = {}  # see Flush.fresh
        self._fresh_in: dict[bytes, set[int]] = {}  # info hash -> users with fresh peers there
        self._fresh_changed: set[int] = set()

    def get(self, info_hash: bytes) -> Swarm | None:
        return self.swarms.get(info_hash)

    def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        *,
        user_id: int,
        ip: str,
        port: int,
        left: int,
        uploaded: int,
        downloaded: int,
        event: bytes,
        now: float,
    ) -> tuple[Swarm, Peer | None, Credit]:
        """Apply one announce; return the swarm, the peer (None once stopped), the credit.

        The caller has checked that the peer id is not another user's and that
        the user may add a client to this swarm (`check_peer`).
        """
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            if event == b"stopped":  # a stop from a peer never seen: nothing to undo or keep
                return Swarm(info_hash), None, Credit()
            swarm = self.swarms[info_hash] = Swarm(info_hash)
        peer = swarm.peers.get(peer_id)
        if peer is None:
            if event == b"stopped":
                return swarm, None, Credit()
            # Its first announce is its baseline: counters sent in a `started` count
            # from it (BEP 3), and a peer this tracker forgot may be credited already.
            peer = Peer(peer_id, user_id, ip, port)
            peer.left = left
            credit = Credit()
            swarm.add(peer)
            self._dirty.add(info_hash)
        else:
            credit = _credit(peer, uploaded, downloaded, left, event == b"started")
            moved = swarm.set_left(peer, left) | peer.move_to(ip, port)
            (self._dirty if moved else self._touched).add(info_hash)
            if event == b"started" or (uploaded, downloaded) != (peer.uploaded, peer.downloaded):
                self._note_fresh(info_hash, peer, uploaded, downloaded, now)
        peer.uploaded, peer.downloaded, peer.last_seen = uploaded, downloaded, now
        self._record(info_hash, user_id, credit)
        if event == b"stopped":
            self._remove(swarm, peer)
            self._stopped.add(user_id)
            return swarm, None, credit
        return swarm, peer, credit

    def _note_fresh(
        self, info_hash: bytes, peer: Peer, uploaded: int, downloaded: int, now: float
    ) -> None:
        entry = [uploaded, downloaded, peer.session_down, now]
        self._fresh.setdefault(peer.user_id, {})[counters_key(info_hash, peer.peer_id)] = entry
        self._fresh_in.setdefault(info_hash, set()).add(peer.user_id)
        self._fresh_changed.add(peer.user_id)

    def _record(self, info_hash: bytes, user_id: int, credit: Credit) -> None:
        if credit.uploaded or credit.downloaded:
            totals = self._transfers[user_id]
            totals[0] += credit.uploaded
            totals[1] += credit.downloaded
        if credit.snatched:
            self._snatches.append((info_hash.hex(), user_id))

    def _remove(self, swarm: Swarm, peer: Peer) -> None:
        swarm.remove(peer)
        self._dirty.add(swarm.info_hash)

    def check_peer(self, info_hash: bytes, peer_id: bytes, user_id: int, limit: int) -> str | None:
        """Why this user may not announce as this peer here (None: they may).

        A peer id belongs to the user who announced it first: other members see
        peer ids in replies, and must not stop, move or take credit for it.
        """
        swarm = self.swarms.get(info_hash)
        if swarm is None:
            return None
        peer = swarm.peers.get(peer_id)
        if peer is not None:
            return None if peer.user_id == user_id else "peer id in use by another account"
        if swarm.per_user.get(user_id, 0) >= limit:
            return f"too many clients of this account in this swarm ({limit}): stop one first"
        return None

    def forget_user(self, user_id: int) -> int:
        """Drop every peer of a user (deleted, or their passkey retired); return how many."""
        dropped = 0
        for swarm in self.swarms.values():
            if user_id in swarm.per_user:
                for peer in [p for p in swarm.peers.values() if p.user_id == user_id]:
                    self._remove(swarm, peer)
                    dropped += 1
        return dropped

    def forget_swarm(self, info_hash: bytes) -> None:
        """Drop a whole swarm (its torrent is no longer tracked)."""
        if self.swarms.pop(info_hash, None) is not None:
            self._dirty.add(info_hash)

    def reap(self, now: float, max_age: float) -> int:
        """Forget peers not heard from within max_age seconds; return how many."""
        cutoff, reaped = now - max_age, 0
        for swarm in list(self.swarms.values()):
            for peer in [p for p in swarm.peers.values() if p.last_seen < cutoff]:
                self._remove(swarm, peer)
                reaped += 1
        return reaped

    def drain(self, *, full: bool = True) -> Flush:
        """Take what changed since the last drain (the caller writes it behind).

        Without `full`, swarms where peers only re-announced stay for a later drain.
        """
        if full:
            self._dirty |= self._touched
            self._touched = set()
        else:
            self._touched -= self._dirty
        swarms: dict[str, Doc | None] = {}
        for info_hash in self._dirty:
            swarm = self.swarms.get(info_hash)
            if swarm is None or not swarm.peers:
                self.swarms.pop(info_hash, None)
                swarms[info_hash.hex()] = None
            else:
                swarms[info_hash.hex()] = swarm.as_doc()
        for info_hash in self._dirty:  # stored now: their peers' counters are in the swarm doc
            self._drop_fresh(info_hash)
        flush = Flush(
            swarms=swarms,
            transfers={user: (up, down) for user, (up, down) in self._transfers.items()},
            snatches=self._snatches,
            stopped=self._stopped,
            fresh={user: dict(self._fresh.get(user, {})) for user in self._fresh_changed},
        )
        self._dirty, self._snatches, self._stopped, self._fresh_changed = set(), [], set(), set()
        self._transfers.clear()
        return flush

    def _drop_fresh(self, info_hash: bytes) -> None:
        prefix = info_hash.hex() + "/"
        for user in self._fresh_in.pop(info_hash, ()):
            entries = self._fresh.get(user, {})
            for key in [k for k in entries if k.startswith(prefix)]:
                del entries[key]
            if not entries:
                self._fresh.pop(user, None)
            self._fresh_changed.add(user)

    def restore(
        self,
        docs: Iterable[Doc],
        *,
        now: float,
        max_age: float,
        fresh: Mapping[int, Mapping[str, list[float]]] | None = None,
    ) -> int:
        """Rebuild swarms from stored swarm docs, leaving out stale peers; return peers loaded.

        `fresh` holds counters written after a swarm was stored (Flush.fresh, per
        user): where they are newer they win, and the swarm is stored again at
        the next drain, so that no stretch of traffic is credited twice.
        """
        newer = {
            key: (user, entry) for user, ks in (fresh or {}).items() for key, entry in ks.items()
        }
        loaded = 0
        for doc in docs:
            info_hash = bytes.fromhex(doc["info_hash"])
            swarm = Swarm(info_hash)
            for pid, stored in (doc.get("peers") or {}).items():
                if float(stored.get("last_seen", 0)) < now - max_age:
                    self._dirty.add(info_hash)
                    continue
                peer = Peer(
                    bytes.fromhex(pid), int(stored["user_id"]), stored["ip"], stored["port"]
                )
                if stored.get("ip6"):
                    peer.move_to(stored["ip6"], stored["port6"])
                peer.left, peer.last_seen = int(stored["left"]), float(stored["last_seen"])
                peer.uploaded, peer.downloaded = int(stored["uploaded"]), int(stored["downloaded"])
                peer.session_down = int(stored.get("session_downloaded", 0))
                user, entry = newer.get(counters_key(info_hash, peer.peer_id), (None, None))
                if entry is not None and user == peer.user_id and entry[3] >= peer.last_seen:
                    up, down, session, seen = entry
                    peer.uploaded, peer.downloaded, peer.session_down = (
                        int(up),
                        int(down),
                        int(session),
                    )
                    peer.last_seen = float(seen)
                    self._note_fresh(
                        info_hash, peer, peer.uploaded, peer.downloaded, peer.last_seen
                    )
                    self._dirty.add(info_hash)
                swarm.add(peer)
                loaded += 1
            self.swarms[info_hash] = swarm
        return loaded


def _credit(peer: Peer, uploaded: int, downloaded: int, left: int, started: bool) -> Credit:
    """What this announce of a known peer credits (the rules are in the module's docstring)."""
    if started:  # a new client session: its counters are the new baseline
        peer.session_down = 0
        return Credit()
    if uploaded < peer.uploaded or downloaded < peer.downloaded:
        peer.session_down = 0  # the client restarted without a `started`: a new session
        up, down = uploaded, downloaded
    else:
        up, down = uploaded - peer.uploaded, downloaded - peer.downloaded
    peer.session_down += down
    return Credit(up, down, snatched=peer.left > 0 and left == 0 and peer.session_down > 0)
