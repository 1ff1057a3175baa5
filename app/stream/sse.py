"""The event log as server-sent events (GET /api/events).

A message per event, in log order:

    id: <seq>
    event: fact
    data: <the event document as JSON, without _rev, on one line>

Why one fixed event type rather than the event's name: names are open-ended
and one event may combine changes of several names ("created+used"); a
browser's EventSource dispatches a named type only to a listener for that
exact name (`onmessage` sees none of them), so a fixed `fact` lets a
consumer take every fact with one listener. The name is in the data, and
`?name=` filters on the server.

A message with only an `id:` line (no data) moves the resumption point past
events the consumer's filters skipped; EventSource records it without firing
an event, so a reconnect does not read those rows again. Comment lines
(`: heartbeat`) keep proxies from closing an idle stream. A response ends
after a bounded time (it holds one of gunicorn's threads); the `retry:` field
tells the client how soon to reconnect, and it resumes with Last-Event-ID:
nothing missed, nothing twice (at least once on a CouchDB cluster whose
shards moved: dedupe by the event's `_id` there).

The caller's credential is asked again at every page and heartbeat tick
(`allowed`, cheap through the Authenticator's cache): a revoked token or a
removed user ends the response with a comment within
`auth.credential_cache_seconds`, and the reconnect is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

from app.config import EventsSettings
from app.store.couch import CouchError, Database
from app.store.events import Doc
from app.stream.feed import (
    Batch,
    EventFilter,
    fetch_page,
    longpoll,
    parse_page,
    peek_next_page,
)

log = logging.getLogger(__name__)

EVENT_TYPE = "fact"
# The feed's own heartbeat when ours is long: how often the stream checks its deadline.
MAX_TICK_SECONDS = 2.0
END = ": this response ends here; reconnect with Last-Event-ID to resume\n\n"
REVOKED = ": the credential was revoked or changed; this response ends\n\n"
DATABASE_GONE = ": the database did not answer; reconnect to resume\n\n"

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# json's C encoder called directly: JSONEncoder.encode builds a new one per call, which
# costs a fifth of encoding an event. CPython only; elsewhere the public path.
_C_ENCODE = (
    c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True)
    if c_make_encoder is not None
    else None
)


@dataclasses.dataclass(frozen=True)
class StreamRequest:
    """What one consumer asked for: where to start, which events, for how long."""

    since: str
    filter: EventFilter
    max_seconds: float
    limit: int | None = None  # events to send before the response ends


def event_json(doc: Doc) -> str:
    """The event as consumers get it: its document without `_rev`, compact, one line."""
    event = dict(doc)
    event.pop("_rev", None)
    if _C_ENCODE is None:
        return _ENCODER.encode(event)
    return "".join(_C_ENCODE(event, 0))


def sse_message(seq: str, doc: Doc) -> str:
    """One SSE message for one event (json.dumps escapes newlines: data is one line)."""
    return f"id: {seq}\nevent: {EVENT_TYPE}\ndata: {event_json(doc)}\n\n"


def sse_preamble(since: str, retry_seconds: float) -> str:
    """The first lines: how soon to reconnect, and the starting point as an id.

    Sending the start as an `id:` matters for `since=now`: a client that
    reconnects before any event arrived resumes from there, not from a
    later "now" that would skip what happened in between.
    """
    return f"retry: {int(retry_seconds * 1000)}\nid: {since}\n\n"


def stream_events(
    db: Database,
    request: StreamRequest,
    settings: EventsSettings,
    first: Batch,
    *,
    allowed: Callable[[], bool] = lambda: True,
    monotonic: Callable[[], float] = time.monotonic,
) -> Iterator[str]:
    """Yield the SSE text of the events after `request.since` until the time or limit is up.

    `first` is the batch the view read already (so a refused `since` was a
    400, not a broken stream). `allowed` says whether the caller may still
    read (asked at every page and tick). A database error mid-stream ends the
    response with a comment; the client reconnects and resumes.
    """
    yield sse_preamble(request.since, settings.retry_seconds)
    stream = _Stream(request, settings, monotonic, allowed)
    try:
        yield from _pages(db, stream, first)
    except CouchError as exc:
        log.warning("event stream ended by a database error: %s", exc)
        yield DATABASE_GONE
        return
    finally:
        stream.close()
    yield REVOKED if stream.refused else END


def _pages(db: Database, stream: _Stream, first: Batch) -> Iterator[str]:
    """Send page after page, waiting (with heartbeats) when none is ready, until finished."""
    batch: Batch | None = first
    while batch is not None:
        stream.read_ahead(db, batch)
        if text := stream.send(batch):
            yield text
        if stream.finished():
            return
        batch = yield from stream.wait(db)


class _Stream:
    """The state of one response: position, events sent, deadline, last write."""

    def __init__(
        self,
        request: StreamRequest,
        settings: EventsSettings,
        monotonic: Callable[[], float],
        allowed: Callable[[], bool],
    ) -> None:
        self.request, self.settings, self.monotonic = request, settings, monotonic
        self.allowed = allowed
        self.refused = False  # the credential no longer reads the stream
        self.position = request.since  # the last id the client has
        self.sent = 0
        self.deadline = monotonic() + request.max_seconds
        self.last_write = monotonic()
        # The next page's bytes, read while this one is sent, the rows asked for, its since.
        self.ahead: tuple[Future[bytes], int, str] | None = None
        self.reader: ThreadPoolExecutor | None = None

    def finished(self) -> bool:
        limit = self.request.limit
        return (
            self.refused
            or self.monotonic() >= self.deadline
            or (limit is not None and self.sent >= limit)
        )

    def still_allowed(self) -> bool:
        """Ask the credential again; remember a refusal (finished() then says so)."""
        if not self.refused and not self.allowed():
            self.refused = True
        return not self.refused

    def send(self, batch: Batch) -> str:
        """The messages of one batch as one write; then an id-only message past rows the
        filter skipped. One write per batch, not per event: each write is a chunk and a
        system call in the server, which would cost more than the event itself.
        The deadline and the credential are checked per batch, the limit per event."""
        if not self.still_allowed() or self.finished():
            return ""
        messages: list[str] = []
        wanted, left = self.request.filter, self._left()
        for seq, doc in batch.rows:
            if wanted.matches(doc):
                messages.append(sse_message(seq, doc))
                self.position = seq
                left -= 1
                if left == 0:
                    break
        self.sent += len(messages)
        if messages:
            self.last_write = self.monotonic()
        if batch.last_seq != self.position and not self.finished():
            messages.append(f"id: {batch.last_seq}\n\n")
            self.position = batch.last_seq
        return "".join(messages)

    def _left(self) -> int:
        """Events still to send before the limit; -1 (never reached) without one."""
        limit = self.request.limit
        return -1 if limit is None else limit - self.sent

    def page(self) -> int:
        """Rows to ask for: `events.batch`, fewer when an unfiltered limit is near."""
        wanted, page = self.request.filter, self.settings.batch
        if self.request.limit is not None and not (wanted.types or wanted.names):
            page = max(1, min(page, self.request.limit - self.sent))
        return page

    def read_ahead(self, db: Database, batch: Batch) -> None:
        """After a full page more rows are waiting: read the next page while this one is
        formatted and sent, so the database and the app work at the same time."""
        if self.ahead is None and batch.full and not self.finished():
            self._submit(db, batch.last_seq)

    def _submit(self, db: Database, since: str) -> None:
        if self.reader is None:
            self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sse-read")
        page = self.page()
        self.ahead = (self.reader.submit(fetch_page, db, since, page), page, since)

    def _take_ahead(self, db: Database) -> Batch:
        """The page read ahead, decoded; the one after it is asked for before decoding,
        so the database is never idle while this process decodes (a CouchError ends
        the stream). A guessed `since` that decoding contradicts is dropped."""
        assert self.ahead is not None
        (ahead, page, _), self.ahead = self.ahead, None
        body = ahead.result()
        since = peek_next_page(body, page)
        if since is not None and not self.finished():
            self._submit(db, since)
        batch = parse_page(body, page)
        if self.ahead is not None and self.ahead[2] != batch.last_seq:
            self.ahead = None  # the guess was wrong: read_ahead asks again
        return batch

    def close(self) -> None:
        if self.reader is not None:
            self.reader.shutdown(wait=False, cancel_futures=True)

    def wait(self, db: Database) -> Generator[str, None, Batch | None]:
        """The next batch: the page read ahead, else a longpoll that yields heartbeats
        while nothing happens; None at the deadline."""
        if self.ahead is not None:
            return self._take_ahead(db)
        tick = min(self.settings.heartbeat_seconds, MAX_TICK_SECONDS)
        while not self.finished():
            poll = longpoll(db, self.position, self.page(), tick)
            try:
                for item in poll:
                    if item is not None:
                        return item
                    if not self.still_allowed() or self.finished():
                        return None
                    if self.monotonic() - self.last_write >= self.settings.heartbeat_seconds:
                        self.last_write = self.monotonic()
                        yield ": heartbeat\n\n"
            finally:
                poll.close()
        return None


class StreamSlots:
    """How many streams one app process may have open at once.

    Every open stream holds a gunicorn thread for up to `stream_max_seconds`;
    without a bound, a handful of consumers would take every thread and the
    app would stop answering workers.
    """

    def __init__(self, size: int) -> None:
        self._free = threading.BoundedSemaphore(max(1, size))

    def take(self) -> Callable[[], None] | None:
        """A release function for one slot, or None when all are taken."""
        if not self._free.acquire(blocking=False):
            return None
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._free.release()

        return release
