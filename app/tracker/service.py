"""Announce and scrape: the tracker's decisions, with no I/O.

`Tracker.handle(target, remote_ip)` turns one request target into one bencoded
reply from memory alone (the directory of members/torrents/whitelist and the
swarms), which is what lets one process answer thousands of announces a second.
Every refusal is a `failure reason` a person can act on: clients show it to
their user and do not retry soon.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.config import TrackerSettings
from app.tracker import protocol
from app.tracker.directory import Directory, Member
from app.tracker.peers import Peer, Swarm, client_name
from app.tracker.protocol import Announce, MalformedRequestError, failure
from app.tracker.swarm import Swarms

NOT_FOUND = b"not found: a BitTorrent tracker answers /announce and /scrape"
HOME = b"distleech tracker: announce at /announce?passkey=<passkey>\n"


class RefusedError(Exception):
    """The announce is understood but not allowed; the text is the failure reason."""


class Tracker:
    """Announce/scrape over in-memory state; the caller owns the sockets and the clock."""

    def __init__(
        self,
        settings: TrackerSettings,
        directory: Directory,
        swarms: Swarms,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.directory, self.swarms, self.clock = settings, directory, swarms, clock
        self.interval = settings.interval_seconds
        self.min_interval = min(settings.min_interval_seconds, settings.interval_seconds)

    def handle(self, target: bytes, remote_ip: str) -> tuple[int, bytes]:
        """(HTTP status, body) for one GET; tracker failures are 200s, as clients expect."""
        path, query = protocol.parse_target(target)
        found = protocol.route(path)
        if found is None:
            return (200, HOME) if path in (b"/", b"") else (404, NOT_FOUND)
        try:
            if found.action == "announce":
                return 200, self.announce(protocol.parse_announce(query, found.passkey), remote_ip)
            return 200, self.scrape(*protocol.parse_scrape(query, found.passkey))
        except (MalformedRequestError, RefusedError) as refusal:
            return 200, failure(str(refusal))

    def check_member(self, passkey: bytes | None) -> Member:
        if not passkey:
            raise RefusedError(
                "no passkey: use the announce URL of the .torrent you downloaded from the site"
            )
        member = self.directory.member(passkey)
        if member is None:
            raise RefusedError(
                "unknown passkey: download the .torrent again from the site to get your current one"
            )
        return member

    def check_announce(self, request: Announce, member: Member) -> None:
        if request.info_hash not in self.directory.torrents:
            raise RefusedError(
                f"torrent not registered with this tracker (info hash {request.info_hash.hex()})"
            )
        if not self.directory.allows_client(request.peer_id):
            raise RefusedError(
                f"client not on the whitelist ({client_name(request.peer_id) or 'unknown'}):"
                " use one of the clients the site allows"
            )
        if request.left and not member.can_leech and request.event != b"stopped":
            raise RefusedError("this account may not leech: you can only seed (left=0) here")
        problem = self.swarms.check_peer(
            request.info_hash, request.peer_id, member.user_id, self.settings.max_peers_per_user
        )
        if problem:
            raise RefusedError(problem)

    def announce(self, request: Announce, remote_ip: str) -> bytes:
        """Record the announce and reply with other peers of the swarm."""
        member = self.check_member(request.passkey)
        self.check_announce(request, member)
        swarm, peer, credit = self.swarms.announce(
            request.info_hash,
            request.peer_id,
            user_id=member.user_id,
            ip=protocol.normalize_ip(remote_ip),
            port=request.port,
            left=request.left,
            uploaded=request.uploaded,
            downloaded=request.downloaded,
            event=request.event,
            now=self.clock(),
        )
        tracked = self.directory.torrents.get(request.info_hash)
        if credit.snatched and tracked is not None:
            tracked.snatches += 1
        want = self.settings.numwant_default if request.numwant is None else request.numwant
        if peer is None:  # it stopped: it wants no peers
            want = 0
        chosen = swarm.sample(peer, min(want, self.settings.numwant_max))
        return self._reply(swarm, chosen, request)

    def _reply(self, swarm: Swarm, chosen: list[Peer], request: Announce) -> bytes:
        if request.compact:
            peers4 = b"".join([p.compact4 for p in chosen])
            peers6 = b"".join([p.compact6 for p in chosen])
            return self._encode(swarm, peers4, peers6)
        listed: list[dict[bytes, object]] = []
        for p in chosen:
            for ip, port in p.addresses():
                entry: dict[bytes, object] = {b"ip": ip.encode(), b"port": port}
                if not request.no_peer_id:
                    entry[b"peer id"] = p.peer_id
                listed.append(entry)
        return self._encode(swarm, listed, b"")

    def _encode(
        self, swarm: Swarm, peers4: bytes | list[dict[bytes, object]], peers6: bytes
    ) -> bytes:
        return protocol.announce_reply(
            interval=self.interval,
            min_interval=self.min_interval,
            complete=swarm.seeders,
            incomplete=swarm.leechers,
            peers4=peers4,
            peers6=peers6,
        )

    def scrape(self, passkey: bytes | None, info_hashes: list[bytes]) -> bytes:
        """BEP 48 counts for the registered torrents asked for (all when none are named)."""
        self.check_member(passkey)
        torrents = self.directory.torrents
        if not info_hashes and not self.settings.full_scrape:
            raise RefusedError("full scrape is off: name each torrent's info_hash")
        wanted = info_hashes or list(torrents)
        files = []
        for info_hash in wanted:
            tracked = torrents.get(info_hash)
            if tracked is None:
                continue
            swarm = self.swarms.get(info_hash)
            seeders, leechers = (swarm.seeders, swarm.leechers) if swarm else (0, 0)
            files.append((info_hash, seeders, leechers, tracked.snatches))
        return protocol.scrape_reply(files)
