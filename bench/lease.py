"""lease: GET /metadata/100 from 8 concurrent clients against raw _bulk_docs; double leases.

The real app runs as `distleech serve --workers 2`. Each lease writes an event
and a projection, so albums/s can reach at most half of raw _bulk_docs docs/s
(ceiling 0.5); the target is 0.45. Every id handed out is collected: one seen
twice is a double lease (must be 0), and all albums must have been handed out.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from typing import Any

import requests

from bench.harness import (
    load_average,
    numbered_rows,
    raw_bulk_docs_rate,
    say,
    scratch_server,
    serving,
    update_seq,
    validating_design,
    verdict,
    write_results,
)

NAME = "lease"
DATABASE = "bench_lease"
ALBUMS = {"full": 50_000, "quick": 3_000}
RAW_DOCS = {"full": 30_000, "quick": 10_000}
CLIENTS = 8
ROWS = 100
WORKERS = 2
CEILING = 0.5
TARGET = 0.45
DEADLINE_SECONDS = 900.0


class Clients:
    """CLIENTS threads leasing until each is handed an empty list; what they saw."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.ids: list[int] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._start = threading.Barrier(CLIENTS + 1)

    def _lease_until_empty(self) -> None:
        session = requests.Session()
        session.headers["X-AUTHENTICATION"] = self.token
        self._start.wait()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                response = session.get(f"{self.base}/metadata/{ROWS}", timeout=300)
            except requests.RequestException as exc:
                self._record_error(f"{type(exc).__name__}: {exc}")
                return
            elapsed = time.perf_counter() - began
            if response.status_code != 200:
                self._record_error(f"{response.status_code}: {response.text[:200]}")
                return
            albums = response.json()["albums"]
            with self._lock:
                self.latencies.append(elapsed)
                self.ids.extend(album["id"] for album in albums)
            if not albums:
                return
        self._record_error(f"still leasing after {DEADLINE_SECONDS:.0f} s")

    def _record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def run(self) -> float:
        """Start every client at once; return the seconds until the last one finished."""
        threads = [
            threading.Thread(target=self._lease_until_empty, daemon=True) for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        self._start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started


def _prepare(url: str, albums: int) -> tuple[str, float]:
    """Import the albums, issue a worker token, warm the queue index; return (token, warm s)."""
    from app.albums import import_albums
    from app.auth import issue_token
    from app.couch import CouchServer
    from app.store import init_database
    from app.timeutil import utcnow

    db = CouchServer(url).database(DATABASE)
    init_database(db, warm=False)
    import_albums(db, numbered_rows(0, albums), actor="bench", now=utcnow())
    token = issue_token(db, "bench-worker", "worker", actor="bench", now=utcnow())
    started = time.perf_counter()
    # As `distleech init` does after an import: build the index before workers ask.
    db.view("queues", "ready", limit=0, reduce=False)
    return token, time.perf_counter() - started


def _left_over(base: str, token: str) -> int:
    """Albums one more lease call still finds after every client saw an empty list."""
    response = requests.get(
        f"{base}/metadata/{ROWS}", headers={"X-AUTHENTICATION": token}, timeout=300
    )
    return len(response.json().get("albums", [])) if response.ok else -1


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    albums = ALBUMS[mode]
    say(
        NAME,
        f"{albums:,} albums, {CLIENTS} clients x GET /metadata/{ROWS}, {WORKERS} app "
        f"workers; load average {load_average():.1f} at start",
    )
    with scratch_server(NAME) as (url, work):
        began = time.perf_counter()
        token, warm_seconds = _prepare(url, albums)
        say(
            NAME,
            f"  imported in {time.perf_counter() - began - warm_seconds:.1f} s; "
            f"queues/ready index built in {warm_seconds:.1f} s",
        )
        with serving(url, DATABASE, work, workers=WORKERS) as base:
            raw_validated = raw_bulk_docs_rate(url, RAW_DOCS[mode], design=validating_design())
            raw = raw_bulk_docs_rate(url, RAW_DOCS[mode])
            seq_before = update_seq(url, DATABASE)
            clients = Clients(base, token)
            seconds = clients.run()
            seq_after = update_seq(url, DATABASE)
            left_over = _left_over(base, token)
            raw_after = raw_bulk_docs_rate(url, RAW_DOCS[mode])

    counts = collections.Counter(clients.ids)
    doubles = sum(n - 1 for n in counts.values() if n > 1)
    unique = len(counts)
    rate = unique / seconds
    ratio = rate / raw
    writes = (
        (seq_after - seq_before) / unique
        if seq_before is not None and seq_after and unique
        else None
    )
    speed_ok = ratio >= TARGET
    correct = doubles == 0 and unique == albums and not clients.errors
    latencies = sorted(clients.latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")

    say(
        NAME,
        f"{rate:,.0f} albums/s = {ratio:.2f} x raw _bulk_docs ({raw:,.0f} docs/s); "
        f"ceiling {CEILING:.2f}; target >= {TARGET:.2f}: {verdict(speed_ok)}",
    )
    say(
        NAME,
        f"double leases {doubles}, albums handed out {unique:,} of {albums:,}, errors "
        f"{len(clients.errors)}; target 0 doubles, all handed out: {verdict(correct)}",
    )
    say(
        NAME,
        f"  {len(latencies):,} requests in {seconds:.1f} s, latency p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms; writes per leased album "
        f"{'n/a' if writes is None else f'{writes:.2f}'} (2.00 = an event and a projection each); "
        f"left over after the run {left_over}; raw _bulk_docs after: {raw_after:,.0f} docs/s "
        f"({raw_after / raw - 1:+.0%} drift)",
    )
    say(
        NAME,
        f"  against raw _bulk_docs into a database with the app's validate_doc_update "
        f"({raw_validated:,.0f} docs/s = {raw_validated / raw:.2f} x raw): "
        f"{rate / raw_validated:.2f}, of a ceiling of {CEILING:.2f}",
    )
    for error in clients.errors[:5]:
        say(NAME, f"  client error: {error}")
    figures = {
        "passed": speed_ok and correct,
        "albums": albums,
        "clients": CLIENTS,
        "rows_per_request": ROWS,
        "app_workers": WORKERS,
        "raw_bulk_docs_per_s": raw,
        "raw_bulk_docs_per_s_after": raw_after,
        "albums_per_s": rate,
        "ratio": ratio,
        "raw_bulk_docs_validated_per_s": raw_validated,
        "ratio_to_validated": rate / raw_validated,
        "ceiling": CEILING,
        "target": TARGET,
        "speed_passed": speed_ok,
        "seconds": seconds,
        "index_warm_seconds": warm_seconds,
        "requests": len(latencies),
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "double_leases": doubles,
        "handed_out": unique,
        "left_over": left_over,
        "writes_per_album": writes,
        "errors": clients.errors[:20],
        "correct": correct,
    }
    write_results(NAME, figures, quick=quick)
    return figures
