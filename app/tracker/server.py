"""The tracker process: an asyncio HTTP server (uvloop + httptools) around app.tracker.service.

Why not Flask/gunicorn like the web app: a thin Flask handler peaks at about
2.4 k requests/s on the reference machine, below the Node tracker's 6.6 k, and
a tracker's swarms must live in one process's memory anyway. An announce is a
GET with a query string and a small bencoded reply, so the server is an
`asyncio.Protocol` over httptools (llhttp, the parser of Node and uvicorn) on
uvloop (libuv): no framework work per request, keep-alive and pipelining for
free. Everything that touches CouchDB runs beside the loop, never in an
announce: a thread follows the registrations (app.tracker.directory) and one
executor thread writes behind (app.tracker.writer).
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
from app.couch import Database
from app.timeutil import utcnow
from app.tracker.directory import follow_directory, load_directory
from app.tracker.peersdb import init_peers_database, list_swarms, open_peers_database
from app.tracker.protocol import normalize_ip
from app.tracker.service import Tracker
from app.tracker.swarm import Swarms
from app.tracker.writer import WriteBehind

log = logging.getLogger(__name__)

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


class TrackerProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive, answer each in order."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.ip = "127.0.0.1"
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        peer = transport.get_extra_info("peername")
        if peer:
            self.ip = normalize_ip(peer[0])

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b"malformed HTTP request", keep_alive=False)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD"):
            status, body = 405, b"method not allowed: announce and scrape are GET requests"
        else:
            status, body = self.tracker.handle(self.url, self.ip)
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


class TrackerProcess:
    """The state, the background work and the sockets of one running tracker."""

    def __init__(self, settings: Settings, db: Database, peers_db: Database) -> None:
        self.settings, self.db, self.peers_db = settings, db, peers_db
        self.stop_follow = threading.Event()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="write-behind")
        self.swarms = Swarms()
        self.writer = WriteBehind(db, peers_db, clock=utcnow)
        self.max_age = (
            2 * settings.tracker.interval_seconds
        )  # no announce within twice the interval
        init_peers_database(peers_db)
        self.directory = load_directory(db)
        self.tracker = Tracker(settings.tracker, self.directory, self.swarms)
        self._restore()

    def _restore(self) -> None:
        """After a restart or crash, swarms come back from the peers database."""
        docs = list(list_swarms(self.peers_db))
        self.writer.remember(docs)
        loaded = self.swarms.restore(docs, now=time.time(), max_age=self.max_age)
        log.info("tracker: %d peers in %d swarms restored", loaded, len(docs))

    async def serve(self, ready: Callable[[list[str]], None] | None = None) -> None:
        """Listen until cancelled or signalled, then write everything behind and return."""
        loop = asyncio.get_running_loop()
        follower = threading.Thread(
            target=follow_directory, args=(self.db, self.directory, self.stop_follow), daemon=True
        )
        follower.start()
        hosts = [h.strip() for h in self.settings.tracker.host.split(",") if h.strip()]
        server = await loop.create_server(
            lambda: TrackerProtocol(self.tracker), hosts, self.settings.tracker.port, backlog=1024
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
            server.close()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await loop.run_in_executor(self.executor, self.final_flush)
            self.stop_follow.set()
            self.executor.shutdown()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        section = self.settings.tracker
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(section.flush_seconds)
            full = time.monotonic() - last_full >= section.refresh_seconds
            last_full = time.monotonic() if full else last_full
            flush = self.swarms.drain(full=full)
            if not (flush or self.writer.pending):
                continue
            try:
                await loop.run_in_executor(self.executor, self.writer.write, flush)
            except Exception:  # a bug must not stop the write-behind for good
                log.exception("tracker: write-behind failed")

    async def _reap_loop(self) -> None:
        period = min(max(self.settings.tracker.interval_seconds / 4, 1), 60)
        while True:
            await asyncio.sleep(period)
            if reaped := self.swarms.reap(time.time(), self.max_age):
                log.info("tracker: %d stale peers dropped", reaped)

    def final_flush(self) -> None:
        """On a clean shutdown nothing is lost: write until it all went, trying a few times."""
        flush = self.swarms.drain()
        for attempt in range(5):
            if self.writer.write(flush) and not self.writer.pending:
                return
            flush = self.swarms.drain()
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
