"""events: GET /api/events to one consumer ÷ raw `_changes`; webhook deliveries with 1 % failures.

One bundled server holds a log of lease-shaped events (ten album changes
each, written with `_bulk_docs` through the log's validator). Figures, from
one run on that server:

- events/s that one SSE consumer receives and parses from `distleech serve`
  (gunicorn, the real app, a reader token) ÷ rows/s of reading the same log
  with `_changes?filter=log/events&include_docs=true` in pages of
  `events.batch` and parsing them: >= 0.8, the median over three rounds,
  each against the faster of a raw read with gzip and one without;
- webhook deliveries/s of the scheduler's delivery job to a local receiver
  that refuses 1 % of requests (HTTP 500, chosen by a hash of the delivery
  and attempt), the job called in a loop with a clock moved past every
  backoff: every event must arrive (zero lost); duplicates are counted.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from app.accounts.auth import issue_token
from app.config import EventsSettings
from app.projectors import register_projectors
from app.store.couch import CouchServer, Database
from app.store.events import event_log, new_event_id
from app.store.setup import init_database
from app.stream.delivery import deliver_webhooks, delivery_state
from app.stream.feed import LOG_FILTER
from app.stream.webhooks import register_webhook
from app.timeutil import iso, utcnow
from bench.harness import (
    load_average,
    say,
    scratch_server,
    serving,
    verdict,
    write_results,
)

NAME = "events"
DATABASE = "bench_events"
EVENTS = {"full": 30_000, "quick": 5_000}
WEBHOOK_EVENTS = {"full": 10_000, "quick": 2_000}
CHANGES_PER_EVENT = 10
TARGET = 0.8
ROUNDS = 3
FAILURE_PERCENT = 1
BATCH = EventsSettings().batch


def fill_log(db: Database, count: int, first: int = 0) -> None:
    """`count` events shaped like a lease of ten albums, in batches of 500."""
    now = utcnow()
    log_db = event_log(db)
    for start in range(first, first + count, 500):
        stop = min(first + count, start + 500)
        docs = [lease_event(n, now + timedelta(microseconds=n)) for n in range(start, stop)]
        failed = [r for r in log_db.bulk_docs(docs) if not r.ok]
        if failed:
            raise RuntimeError(f"the log refused {len(failed)} events: {failed[0]}")


def lease_event(n: int, at: datetime) -> dict[str, Any]:
    """The n-th event: worker-1 leased ten albums (the shape of a real lease)."""
    changes = [
        {
            "aggregate": f"album:{n * CHANGES_PER_EVENT + i}",
            "version": 2,
            "name": "leased",
            "data": {"holder": "worker-1", "expires_at": iso(at + timedelta(hours=1))},
        }
        for i in range(CHANGES_PER_EVENT)
    ]
    return {
        "_id": new_event_id(at, "bench"),
        "type": "event",
        "name": "leased",
        "at": iso(at),
        "actor": "worker-1",
        "site": "bench",
        "changes": changes,
    }


def raw_changes_rate(url: str, database: str, *, gzip: bool) -> tuple[float, int]:
    """Rows/s (and rows) of reading the log's events with their bodies, page by page."""
    session = requests.Session()
    headers = {} if gzip else {"Accept-Encoding": "identity"}
    since, seen = "0", 0
    started = time.perf_counter()
    while True:
        params = {"since": since, "filter": LOG_FILTER, "include_docs": "true", "limit": str(BATCH)}
        feed = session.get(
            f"{url}/{database}/_changes", params=params, headers=headers, timeout=300
        ).json()
        seen += sum(1 for row in feed["results"] if row.get("doc"))
        since = str(feed["last_seq"])  # opaque: passed back, never computed with
        if len(feed["results"]) < BATCH:
            break
    return seen / (time.perf_counter() - started), seen


def sse_rate(base: str, token: str, expected: int) -> tuple[float, int, int]:
    """Events/s one consumer receives (and parses) from GET /api/events; events, repeats."""
    seen: set[str] = set()
    received = 0
    started = time.perf_counter()
    with requests.get(
        f"{base}/api/events",
        params={"since": "0", "limit": str(expected)},
        headers={"X-AUTHENTICATION": token},
        stream=True,
        timeout=60,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines(chunk_size=65536):
            if line.startswith(b"data: "):
                seen.add(json.loads(line[6:])["_id"])
                received += 1
                if received >= expected:
                    break
    return received / (time.perf_counter() - started), received, received - len(seen)


def is_refused(delivery: str, attempt: str) -> bool:
    """About 1 % of attempts, the same in every run (a hash, not a random draw)."""
    digest = hashlib.sha256(f"{delivery}:{attempt}".encode()).hexdigest()
    return int(digest, 16) % 100 < FAILURE_PERCENT


class FlakyReceiver:
    """A receiver that answers 500 to about 1 % of requests and records what it accepted."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.refused = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = self.headers
                refuse = is_refused(headers["X-Distleech-Delivery"], headers["X-Distleech-Attempt"])
                receiver.record(body, refuse)
                self.send_response(500 if refuse else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def record(self, body: bytes, refused: bool) -> None:
        with self.lock:
            if refused:
                self.refused += 1
            else:
                self.accepted.append(json.loads(body)["_id"])


@contextmanager
def flaky_receiver() -> Iterator[FlakyReceiver]:
    """A FlakyReceiver serving from its own thread for the block; stopped and joined after."""
    receiver = FlakyReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)


WEBHOOK_SETTINGS = EventsSettings(
    webhook_seconds=30,
    webhook_batch=2000,
    webhook_backoff_seconds=1,
    webhook_max_attempts=8,
    webhook_allow_private=True,  # the receiver is on 127.0.0.1
)


def webhook_rate(db: Database, count: int) -> dict[str, Any]:
    """Deliver `count` new events to a flaky receiver with the real job; figures."""
    now = utcnow()
    with flaky_receiver() as receiver:
        made = register_webhook(
            db, receiver.url, types=["album"], allow_private=True, actor="bench", now=now
        )
        fill_log(db, count, first=10_000_000)
        started = time.perf_counter()
        runs, now = deliver_until_all_arrived(db, receiver, count, now)
        seconds = time.perf_counter() - started
        deliver_webhooks(db, now, WEBHOOK_SETTINGS)  # nothing left: must deliver nothing more
        state = delivery_state(db, made["id"])
    return webhook_figures(receiver, count, state, runs, seconds)


def deliver_until_all_arrived(
    db: Database, receiver: FlakyReceiver, count: int, now: datetime
) -> tuple[int, datetime]:
    """Run the job until every event arrived (bounded); return the runs and the clock.

    Each refusal holds the webhook until its backoff is due (in-order delivery), so
    a run ends at every refusal; the clock moves past the backoff for the next.
    """
    runs = 0
    while len(set(receiver.accepted)) < count and runs < count // 10 + 100:
        runs += 1
        deliver_webhooks(db, now, WEBHOOK_SETTINGS)
        now += timedelta(minutes=5)
    return runs, now


def webhook_figures(
    receiver: FlakyReceiver, count: int, state: dict[str, Any], runs: int, seconds: float
) -> dict[str, Any]:
    """What webhook_rate reports: arrivals, losses, duplicates, refusals, the rate."""
    unique = len(set(receiver.accepted))
    return {
        "events": count,
        "delivered": len(receiver.accepted),
        "unique": unique,
        "lost": count - unique,
        "duplicates": len(receiver.accepted) - unique,
        "refused": receiver.refused,
        "dead_letters": state["dead_letters"],
        "pending_after": state["pending"],
        "runs": runs,
        "seconds": seconds,
        "per_s": count / seconds,
    }


def sse_rounds(url: str, db: Database, work: Any, token: str) -> dict[str, Any]:
    """ROUNDS rounds of (raw gzip, raw identity, SSE) on the same server and log.

    On a shared machine one read can be a third slower than the next, so each
    round compares SSE with the faster raw read of that round, and the
    figure is the median ratio over the rounds.
    """
    log_name = event_log(db).name
    with serving(url, DATABASE, work) as base:
        rounds = [sse_round(url, log_name, base, token) for _ in range(ROUNDS)]
    return {
        "rounds": rounds,
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "complete": all(r["received"] == r["expected"] and not r["repeats"] for r in rounds),
    }


def sse_round(url: str, log_name: str, base: str, token: str) -> dict[str, Any]:
    """One round: a raw read with gzip, one without, then the SSE consumer; its figures."""
    raw = [raw_changes_rate(url, log_name, gzip=g) for g in (True, False)]
    expected = raw[1][1]
    rate, received, repeats = sse_rate(base, token, expected)
    return {
        "raw_gzip": raw[0][0],
        "raw_identity": raw[1][0],
        "sse": rate,
        "ratio": rate / max(r[0] for r in raw),
        "received": received,
        "expected": expected,
        "repeats": repeats,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Fill a log, measure the SSE ratio and the webhook rate, report and store them."""
    mode = "quick" if quick else "full"
    count = EVENTS[mode]
    register_projectors()
    say(NAME, f"{count:,} events of {CHANGES_PER_EVENT} changes; load {load_average():.1f}")
    with scratch_server(NAME) as (url, work):
        db = Database(CouchServer(url, timeout=300), DATABASE, site="bench")
        db.server.create_database(db.name)
        init_database(db, warm=False)
        fill_log(db, count)
        token = issue_token(db, "bench-reader", "reader", actor="bench", now=utcnow())
        sse = sse_rounds(url, db, work, token)
        hooks = webhook_rate(db, WEBHOOK_EVENTS[mode])
    report(sse, hooks)
    figures = {
        "passed": sse_passed(sse) and webhooks_passed(hooks),
        "events": count,
        "ratio": sse["ratio"],
        "target": TARGET,
        "sse": sse,
        "webhooks": hooks,
        "load_average_after": load_average(),
    }
    write_results(NAME, figures, quick=quick)
    return figures


def sse_passed(sse: dict[str, Any]) -> bool:
    return bool(sse["ratio"] >= TARGET and sse["complete"])


def webhooks_passed(hooks: dict[str, Any]) -> bool:
    return bool(hooks["lost"] == 0 and hooks["pending_after"] == 0)


def report(sse: dict[str, Any], hooks: dict[str, Any]) -> None:
    """Say each SSE round, the SSE verdict and the webhook verdict."""
    for n, r in enumerate(sse["rounds"], 1):
        say(
            NAME,
            f"  round {n}: SSE {r['sse']:,.0f} events/s, raw _changes gzip {r['raw_gzip']:,.0f} /"
            f" identity {r['raw_identity']:,.0f} rows/s: {r['ratio']:.2f};"
            f" {r['received']:,} of {r['expected']:,} received, {r['repeats']} twice",
        )
    say(
        NAME,
        f"SSE to one consumer = {sse['ratio']:.2f} x raw _changes (median of {ROUNDS} rounds);"
        f" target >= {TARGET}: {verdict(sse_passed(sse))}",
    )
    say(
        NAME,
        f"webhooks {hooks['per_s']:,.0f} deliveries/s ({hooks['events']:,} events, "
        f"{hooks['refused']} refused and retried, {hooks['runs']} runs); lost {hooks['lost']}, "
        f"duplicates {hooks['duplicates']}, dead letters {hooks['dead_letters']}: "
        f"{verdict(webhooks_passed(hooks))}",
    )
