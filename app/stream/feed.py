"""Reading the event log's `_changes` feed as consumers do: events only, resumable by seq.

Both the event stream (app/stream/sse.py) and the webhook deliveries
(app/stream/delivery.py) read the log through the log design document's
filter function `log/events` (designdocs/log/filters/events.js), never a
selector: pouchdb-server ignores selectors and would hand out design
documents too. Filtering by aggregate type and change name happens here, in
the app, because a filter function with parameters would cost a JS call per
row on both servers and could not be cached.

Sequence values are opaque: integers on the bundled pouchdb-server, strings
like "12-g1AAAA…" on Apache CouchDB 3.x. They are only ever passed back as
`since` and compared for equality as text, never ordered or added to.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Generator, Iterable
from typing import Any

import requests

from app.store.couch import CouchError, CouchUnavailableError, Database
from app.store.events import Doc, aggregate_type, event_log

LOG_FILTER = "log/events"
# A seq as both servers write it (digits; CouchDB's "<n>-<base64url>"), or "now".
SEQ_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,4096}")
# A filter value: aggregate types and event names are short snake_case words.
FILTER_PATTERN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
MAX_FILTER_VALUES = 32
# The end of a normal feed body: `"last_seq":N}` (pouchdb-server) or
# `"last_seq":"N-…","pending":N}` (Apache CouchDB), found without decoding the body.
LAST_SEQ_AT_END = re.compile(rb'"last_seq":("[A-Za-z0-9_-]*"|\d+)(?:,"pending":\d+)?\}\s*$')


@dataclasses.dataclass(frozen=True)
class EventFilter:
    """Which events a consumer wants: by aggregate type and by change (or event) name.

    An event records one command over one or many aggregates, so it matches
    when one of its changes matches both lists (an empty list matches all).
    The whole event is delivered, never a part of it: it is the fact.
    """

    types: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()

    def matches(self, event: Doc) -> bool:
        """Whether the consumer wants this event document."""
        if not self.types and not self.names:
            return True
        for change in event.get("changes") or ():
            if self.types and aggregate_type(str(change.get("aggregate", ""))) not in self.types:
                continue
            if self.names and not ({change.get("name"), event.get("name")} & self.names):
                continue
            return True
        return False

    def as_dict(self) -> dict[str, list[str]]:
        return {"types": sorted(self.types), "names": sorted(self.names)}


def check_filter_values(values: Iterable[str], what: str) -> frozenset[str]:
    """Validate the types or names a consumer asked for; raise ValueError saying which."""
    chosen = frozenset(v.strip() for v in values if v.strip())
    if len(chosen) > MAX_FILTER_VALUES:
        raise ValueError(f"at most {MAX_FILTER_VALUES} {what} values")
    for value in chosen:
        if not FILTER_PATTERN.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not a word of letters, digits, '_', '.', '-'")
    return chosen


def is_valid_seq(seq: str) -> bool:
    """Whether a resumption point looks like a seq of either server (not whether it exists)."""
    return bool(SEQ_PATTERN.fullmatch(seq))


@dataclasses.dataclass
class Batch:
    """Rows of the feed as (seq, event document), and the seq to read on from."""

    rows: list[tuple[str, Doc]]
    last_seq: str
    full: bool  # as many rows as asked for: more may be waiting


def current_seq(db: Database) -> str:
    """The log's current end, usable as `since` for "only what happens from now on"."""
    return str(event_log(db).info()["update_seq"])


def read_batch(db: Database, since: str, limit: int) -> Batch:
    """One normal read of the log's feed after `since` (events only, with their bodies)."""
    return parse_page(fetch_page(db, since, limit), limit)


def fetch_page(db: Database, since: str, limit: int) -> bytes:
    """The bytes of one page of the feed: only I/O, so a thread may read the next page
    while another decodes this one (json.loads holds the GIL, a socket read does not)."""
    params = {"filter": LOG_FILTER, "include_docs": "true", "limit": str(limit), "since": since}
    response = _get_changes(db, params, stream=False, timeout=event_log(db).server.timeout)
    try:
        return response.content
    finally:
        response.close()


def peek_next_page(body: bytes, limit: int) -> str | None:
    """The `since` of the page after this one if it looks full, before it is decoded; else None.

    Lets a reader ask for the next page while it decodes this one. "Looks
    full" counts `"seq":` in the bytes, which a document may contain too: a
    guess that errs only toward reading a page that turns out empty or short.
    """
    if body.count(b'"seq":') < limit:
        return None
    found = LAST_SEQ_AT_END.search(body, max(0, len(body) - 4200))
    return None if found is None else found.group(1).decode("ascii").strip('"')


def parse_page(body: bytes, limit: int) -> Batch:
    """A page of the feed as a Batch; raise CouchUnavailableError if it is cut short."""
    try:
        feed = json.loads(body)
    except ValueError:
        raise CouchUnavailableError(0, "bad_feed", "the changes feed was not JSON") from None
    return _batch(feed, limit)


def _batch(feed: dict[str, Any], limit: int) -> Batch:
    results = feed.get("results") or []
    rows = [(str(row["seq"]), row["doc"]) for row in results if row.get("doc")]
    return Batch(rows, str(feed["last_seq"]), len(results) >= limit)


def longpoll(
    db: Database, since: str, limit: int, heartbeat_seconds: float
) -> Generator[Batch | None, None, None]:
    """Wait for events after `since`: yield None at each heartbeat, then the batch once.

    `feed=longpoll` answers at once when events are waiting, else when the
    next one arrives. Its `timeout` is ignored by pouchdb-server and
    overridden by `heartbeat` on Apache CouchDB, so the wait is bounded on
    our side: the server sends a newline every heartbeat, the caller decides
    at each None whether to go on, and a read timeout of twice the heartbeat
    ends a wait whose heartbeats stopped (the caller simply asks again).
    Closing this generator closes the connection.
    """
    response = _open_longpoll(db, since, limit, heartbeat_seconds)
    try:
        body = bytearray()
        for chunk in response.iter_content(chunk_size=None):
            body.extend(chunk)
            if not chunk.strip():
                yield None
    except requests.RequestException:  # a read timeout: no heartbeat came; ask again
        yield None
        return
    finally:
        response.close()
    yield parse_page(bytes(body), limit)


def _open_longpoll(
    db: Database, since: str, limit: int, heartbeat_seconds: float
) -> requests.Response:
    """Start the longpoll request; the response streams (heartbeats, then the body)."""
    params = {
        "feed": "longpoll",
        "heartbeat": str(max(100, int(heartbeat_seconds * 1000))),
        "filter": LOG_FILTER,
        "include_docs": "true",
        "limit": str(limit),
        "since": since,
    }
    timeout = (event_log(db).server.timeout, 2 * heartbeat_seconds + 1)
    return _get_changes(db, params, stream=True, timeout=timeout)


def _get_changes(
    db: Database, params: dict[str, str], *, stream: bool, timeout: float | tuple[float, float]
) -> requests.Response:
    """GET the log's _changes on the database's own session (its pool and credentials).

    Not through Database.changes: pouchdb-server gzips when asked (requests
    always asks), and its gzip stream holds the heartbeat newlines of a
    longpoll back until a change arrives; unzipped, a page is also read
    faster on both sides of a local connection. So: the bytes as they are.
    """
    log_db = event_log(db)
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    try:
        response = log_db.server.session.get(
            f"{log_db.server.url}/{log_db.path}/_changes",
            params=params,
            headers=headers,
            stream=stream,
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise CouchUnavailableError(0, "unavailable", str(exc)) from None
    if response.status_code >= 400:
        raise _feed_error(response)
    return response


def _feed_error(response: requests.Response) -> CouchError:
    """The CouchError for a refused feed request (a bad `since` on CouchDB is a 400)."""
    try:
        body = response.json()
        error, reason = str(body.get("error", "")), str(body.get("reason", ""))
    except ValueError:
        error, reason = "http_error", response.text[:200]
    finally:
        response.close()
    if response.status_code >= 500:
        return CouchUnavailableError(response.status_code, error, reason)
    return CouchError(response.status_code, error, reason)
