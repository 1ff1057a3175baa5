"""The tracker process: an asyncio HTTP server (uvloop + httptools) around app.tracker.service.

Why not Flask/gunicorn like the web app: a thin Flask handler peaks at about
2.4 k requests/s on the reference machine, below the Node tracker's 6.6 k, and
a tracker's swarms must live in one process's memory anyway. An announce is a
GET with a query string and a small bencoded reply, so the server is an
`asyncio.Protocol` over httptools (llhttp, the parser of Node and uvicorn) on
uvloop (libuv): no framework work per request, keep-alive and pipelining for
free. Everything that touches CouchDB runs beside the loop, never in an
announce: a thread follows the registrations (app.tracker.directory) and one
executor thread writes behind (app.tracker.writer): swarms and the running
tallies of users' traffic to the peers database each flush, summaries of that
traffic to the event log each hour and when a client stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import cast

import httptools
import uvloop

from app.config import Settings
from app.store.couch import Database
from app.timeutil import utcnow
from app.tracker.activity import ACTIVITY_PREFIX
from app.tracker.directory import follow_directory, load_directory
from app.tracker.peersdb import init_peers_database, list_swarms, open_peers_database
from app.tracker.protocol import normalize_ip
from app.tracker.service import Tracker
from app.tracker.swarm import Doc, Flush, Swarms
from app.tracker.writer import WriteBehind

log = logging.getLogger(__name__)

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    414: b"URI Too Long",
    500: b"Internal Server Error",
}
MAX_TARGET_BYTES = 8192  # an announce is ~300 bytes; a scrape of 100 hashes ~6 KB


class TrackerProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive, answer each in order."""

    def __init__(self, tracker: Tracker, connections: dict[TrackerProtocol, float]) -> None:
        self.tracker, self.connections = tracker, connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.ip = "127.0.0.1"
        self.parts: list[bytes] = []
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self.connections[self] = time.monotonic()
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip = normalize_ip(peer[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.pop(self, None)

    def data_received(self, data: bytes) -> None:
        self.connections[self] = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self.transport is not None and self.transport.is_closing():
                return  # we refused it ourselves (a target too long) and closed
            log.exception("tracker: a request failed")  # our bug, not the client's
            self._send(500, b"internal error", keep_alive=False)
        except httptools.HttpParserError:
            self._send(400, b"malformed HTTP request", keep_alive=False)

    def on_message_begin(self) -> None:
        self.parts, self.size = [], 0

    def on_url(self, url: bytes) -> None:
        self.size += len(url)
        if self.size > MAX_TARGET_BYTES:
            self._send(414, b"request target too long", keep_alive=False)
            raise ValueError("request target too long")  # stops the parser; we closed
        self.parts.append(url)

    def on_message_complete(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):
            status, body = 405, b"method not allowed: announce and scrape are GET requests"
        else:
            status, body = self.tracker.handle(b"".join(self.parts), self.ip)
        self._send(status, body if method != b"HEAD" else b"", self.parser.should_keep_alive())

    def _send(self, status: int, body: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (
            status,
            REASONS.get(status, b"Error"),
            len(body),
        )
        self.transport.write(
            head + (b"\r\n" if keep_alive else b"Connection: close\r\n\r\n") + body
        )
        if not keep_alive:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TrackerProcess:
    """The state, the background work and the sockets of one running tracker."""

    def __init__(self, settings: Settings, db: Database, peers_db: Database) -> None:
        self.settings, self.db, self.peers_db = settings, db, peers_db
        self.stop_follow = threading.Event()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self.swarms = Swarms()
        self.connections: dict[TrackerProtocol, float] = {}  # open ones, by last activity
        self.writer = WriteBehind(db, peers_db, clock=utcnow)
        # a peer is stale when it has not announced within twice the interval; its stored
        # last-seen time must be fresher than that, or the reaper job would drop it
        self.max_age = 2 * settings.tracker.interval_seconds
        self.refresh_seconds = min(
            settings.tracker.refresh_seconds, settings.tracker.interval_seconds / 2
        )
        init_peers_database(peers_db)
        self.directory = load_directory(db)
        self.tracker = Tracker(settings.tracker, self.directory, self.swarms)
        self._restore()

    def _restore(self) -> None:
        """After a restart or crash, swarms and tallies come back from the peers database.

        A tally's snatches are not in the torrent's projection yet: the scrape
        count adds them, as it adds the snatches seen since.
        """
        tallies = [
            doc
            for doc in self.peers_db.iter_prefix(ACTIVITY_PREFIX)
            if doc.get("type") == "activity"
        ]
        fresh = self.writer.restore(tallies)
        docs = list(list_swarms(self.peers_db))
        self.writer.remember(docs)
        loaded = self.swarms.restore(docs, now=time.time(), max_age=self.max_age, fresh=fresh)
        for info_hash, count in self.writer.unrecorded_snatches().items():
            tracked = self.directory.torrents.get(bytes.fromhex(info_hash))
            if tracked is not None:
                tracked.snatches += count
        log.info(
            "tracker: %d peers in %d swarms and %d tallies restored",
            loaded,
            len(docs),
            len(tallies),
        )

    async def serve(self, ready: Callable[[list[str]], None] | None = None) -> None:
        """Listen until SIGINT/SIGTERM, then close every connection, write all behind, return."""
        loop = asyncio.get_running_loop()
        follower = threading.Thread(
            target=follow_directory,
            args=(self.db, self.directory, self.stop_follow),
            kwargs={"apply": lambda docs: loop.call_soon_threadsafe(self.apply_changes, docs)},
            daemon=True,
        )
        follower.start()
        hosts = [h.strip() for h in self.settings.tracker.host.split(",") if h.strip()]
        server = await loop.create_server(
            lambda: TrackerProtocol(self.tracker, self.connections),
            hosts,
            self.settings.tracker.port,
            backlog=1024,
        )
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stopping.set)
        urls = [f"http://{_url_host(h)}:{self.settings.tracker.port}" for h in hosts]
        log.info("tracker listening on %s", ", ".join(urls))
        if ready:
            ready(urls)
        background = [
            asyncio.create_task(self._flush_loop()),
            asyncio.create_task(self._reap_loop()),
        ]
        try:
            await stopping.wait()
        finally:
            await self._shut_down(server, background)

    async def _shut_down(
        self, server: asyncio.Server, background: list[asyncio.Task[None]]
    ) -> None:
        """Stop taking announces (open keep-alive connections too), then write the rest."""
        server.close()
        for connection in list(self.connections):
            connection.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        flush = self.swarms.drain()  # on the loop: nothing can change it any more
        await asyncio.get_running_loop().run_in_executor(self.executor, self.final_write, flush)
        self.stop_follow.set()
        self.executor.shutdown()

    def apply_changes(self, docs: list[Doc]) -> None:
        """Registration changes, on the loop: a deleted user's or torrent's peers go at once."""
        for doc in docs:
            gone = self.directory.apply(doc)
            if gone is not None and gone.user_id is not None:
                self.swarms.forget_user(gone.user_id)
            elif gone is not None and gone.info_hash is not None:
                self.swarms.forget_swarm(gone.info_hash)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        section = self.settings.tracker
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(section.flush_seconds)
            full = time.monotonic() - last_full >= self.refresh_seconds
            last_full = time.monotonic() if full else last_full
            flush = self.swarms.drain(full=full)
            if not (flush or self.writer.pending):
                continue
            try:
                await loop.run_in_executor(self.executor, self.writer.write, flush)
            except Exception:  # a bug must not stop the write-behind for good
                log.exception("tracker: write-behind failed")

    async def _reap_loop(self) -> None:
        """Drop stale peers, and close connections idle or stuck mid-request for too long."""
        section = self.settings.tracker
        period = min(max(section.interval_seconds / 4, 1), 10, section.idle_seconds)
        while True:
            await asyncio.sleep(period)
            if reaped := self.swarms.reap(time.time(), self.max_age):
                log.info("tracker: %d stale peers dropped", reaped)
            cutoff = time.monotonic() - section.idle_seconds
            for connection in [c for c, seen in self.connections.items() if seen < cutoff]:
                connection.close()

    def final_write(self, flush: Flush) -> None:
        """On a clean shutdown nothing is lost: write until it all went, trying a few times.

        Every tally closes into a summary event; what cannot be recorded stays
        in the peers database and is recorded after the next start.
        """
        for attempt in range(5):
            if self.writer.write(flush, final=True) and not self.writer.pending:
                return
            flush = Flush({}, {}, [])  # the writer kept what failed; retry just that
            time.sleep(0.5 * (attempt + 1))
        log.error("tracker: could not write the last changes behind; announces will rebuild them")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_tracker(settings: Settings, *, ready: Callable[[list[str]], None] | None = None) -> None:
    """Run the tracker process until SIGINT/SIGTERM (`distleech tracker serve`)."""
    from app import connect

    db = connect(settings, pool_size=4)
    process = TrackerProcess(settings, db, open_peers_database(db, settings))
    uvloop.run(process.serve(ready))
