"""lease: 16 clients x GET /metadata/100 against raw _bulk_docs and against PiCaS.

The real app runs as `distleech serve --workers 2`; the inventory goes in
through `distleech import-csv` and the token through `distleech token add`,
so the bench measures what an operator runs whatever the store looks like
inside. Three figures, all from one run on one server:

- albums/s ÷ raw _bulk_docs docs/s (one client, batches of 1,000): >= 0.25;
- albums/s ÷ claimed tokens/s of a PiCaS queue (bench/picas.py) with the
  same number of clients over the same number of tasks: >= 1.0. PiCaS claims
  one document per request; a lease call hands out up to 100, so this is the
  comparison a worker feels, not one of request rates;
- fairness: per-call latency p99 <= 2 x p50 (calls that returned albums; the
  last, empty answers are not leases).

Every id handed out is collected: one seen twice is a double lease (must be
0), and every album must have been handed out exactly once.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import requests

from bench import picas
from bench.harness import (
    events_database,
    format_latencies,
    import_inventory,
    issue_worker_token,
    load_average,
    percentiles,
    process_rss,
    raw_bulk_docs_rate,
    read_model_designs,
    run_cli,
    say,
    scratch_server_process,
    serving,
    update_seq,
    verdict,
    write_results,
)

NAME = "lease"
DATABASE = "bench_lease"
ALBUMS = {"full": 50_000, "quick": 3_000}
RAW_DOCS = {"full": 30_000, "quick": 10_000}
PICAS_BUDGET = {"full": 300.0, "quick": 90.0}  # seconds; a steady-state rate is enough
CLIENTS = 16
ROWS = 100
WORKERS = 2
RAW_TARGET = 0.25
PICAS_TARGET = 1.0
FAIRNESS = 2.0  # p99 <= FAIRNESS x p50
DEADLINE_SECONDS = 900.0


class Clients:
    """CLIENTS threads leasing until each is handed an empty list; what they saw."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.ids: list[int] = []
        self.latencies: list[float] = []
        self.empty_calls = 0
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
                if albums:
                    self.latencies.append(elapsed)
                    self.ids.extend(album["id"] for album in albums)
                else:
                    self.empty_calls += 1
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


def _left_over(base: str, token: str) -> int:
    """Albums one more lease call still finds after every client saw an empty list."""
    response = requests.get(
        f"{base}/metadata/{ROWS}", headers={"X-AUTHENTICATION": token}, timeout=300
    )
    return len(response.json().get("albums", [])) if response.ok else -1


def _seqs(url: str) -> list[int | None]:
    """Update sequences of the read model and (when there is one) the event log."""
    log = events_database(url, DATABASE)
    return [update_seq(url, DATABASE), update_seq(url, log) if log else 0]


def _writes_per_album(
    before: list[int | None], after: list[int | None], unique: int
) -> float | None:
    """Documents written per leased album over both databases; None where seqs are opaque."""
    if not unique or None in before or None in after:
        return None
    return sum(int(a or 0) - int(b or 0) for a, b in zip(after, before, strict=True)) / unique


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    albums = ALBUMS[mode]
    say(
        NAME,
        f"{albums:,} albums, {CLIENTS} clients x GET /metadata/{ROWS}, {WORKERS} app "
        f"workers, PiCaS peer with {CLIENTS} clients; load average {load_average():.1f} at start",
    )
    with scratch_server_process(NAME) as server:
        url, work = server.url, server.work
        raw = raw_bulk_docs_rate(url, RAW_DOCS[mode])
        peer, peer_warm = picas.measure(url, albums, clients=CLIENTS, budget=PICAS_BUDGET[mode])
        say(NAME, f"  PiCaS: {picas.describe(peer, albums)}; todo index warm {peer_warm:.1f} s")
        imported = import_inventory(url, DATABASE, work, albums)
        token = issue_worker_token(url, DATABASE, work)
        began = time.perf_counter()
        run_cli(url, DATABASE, work, "init")  # as the README says after an import: warm indexes
        warm_seconds = time.perf_counter() - began
        say(
            NAME,
            f"  imported in {imported.seconds:.1f} s; `distleech init` (index warm) "
            f"{warm_seconds:.1f} s; load average {load_average():.1f}",
        )
        with serving(url, DATABASE, work, workers=WORKERS) as base:
            seq_before = _seqs(url)
            clients = Clients(base, token)
            seconds = clients.run()
            seq_after = _seqs(url)
            left_over = _left_over(base, token)
        raw_after = raw_bulk_docs_rate(url, RAW_DOCS[mode])
        raw_designs = raw_bulk_docs_rate(url, RAW_DOCS[mode], designs=read_model_designs())
        server_rss, server_peak = process_rss(server.pid)
        load_end = load_average()

    counts = collections.Counter(clients.ids)
    doubles = sum(n - 1 for n in counts.values() if n > 1)
    unique = len(counts)
    rate = unique / seconds
    ratio = rate / raw
    ratio_peer = rate / peer.rate if peer.rate else float("inf")
    latency = percentiles(clients.latencies)
    writes = _writes_per_album(seq_before, seq_after, unique)
    raw_ok = ratio >= RAW_TARGET
    peer_ok = ratio_peer >= PICAS_TARGET
    fair_ok = latency["p99"] <= FAIRNESS * latency["p50"]
    correct = doubles == 0 and unique == albums and not clients.errors and left_over == 0

    say(
        NAME,
        f"{rate:,.0f} albums/s = {ratio:.2f} x raw _bulk_docs ({raw:,.0f} docs/s); "
        f"target >= {RAW_TARGET:.2f}: {verdict(raw_ok)}",
    )
    say(
        NAME,
        f"  = {rate / raw_designs:.2f} x raw _bulk_docs into a database that holds the read "
        f"model's design documents ({raw_designs:,.0f} docs/s)",
    )
    say(
        NAME,
        f"{rate:,.0f} albums/s = {ratio_peer:.2f} x PiCaS ({peer.rate:,.0f} tokens/s, "
        f"{peer.doubles} double claims); target >= {PICAS_TARGET:.2f}: {verdict(peer_ok)}",
    )
    say(
        NAME,
        f"per call {format_latencies(latency)}; target p99 <= {FAIRNESS:.0f} x p50: "
        f"{verdict(fair_ok)}",
    )
    say(
        NAME,
        f"double leases {doubles}, albums handed out {unique:,} of {albums:,}, left over "
        f"{left_over}, errors {len(clients.errors)}; target 0 doubles, all handed out: "
        f"{verdict(correct)}",
    )
    mib = 1024 * 1024
    say(
        NAME,
        f"  {len(clients.latencies):,} calls in {seconds:.1f} s (+{clients.empty_calls} empty); "
        f"documents written per leased album "
        f"{'n/a (opaque seq)' if writes is None else f'{writes:.2f}'}; raw _bulk_docs after: "
        f"{raw_after:,.0f} docs/s ({raw_after / raw - 1:+.0%} drift); server RSS "
        f"{server_rss / mib:,.0f} MiB (peak {server_peak / mib:,.0f}); load average {load_end:.1f}",
    )
    for error in clients.errors[:5]:
        say(NAME, f"  client error: {error}")
    figures = {
        "passed": raw_ok and peer_ok and fair_ok and correct,
        "albums": albums,
        "clients": CLIENTS,
        "rows_per_request": ROWS,
        "app_workers": WORKERS,
        "raw_bulk_docs_per_s": raw,
        "raw_bulk_docs_per_s_after": raw_after,
        "raw_bulk_docs_with_designs_per_s": raw_designs,
        "ratio_with_designs": rate / raw_designs,
        "albums_per_s": rate,
        "ratio": ratio,
        "target": RAW_TARGET,
        "picas_claimed_per_s": peer.rate,
        "picas_claimed": peer.unique,
        "picas_double_claims": peer.doubles,
        "picas_conflicts": peer.conflicts,
        "picas_gave_up": peer.gave_up,
        "picas_seconds": peer.seconds,
        "picas_out_of_time": peer.out_of_time,
        "picas_latency_s": percentiles(peer.latencies),
        "ratio_to_picas": ratio_peer,
        "picas_target": PICAS_TARGET,
        "latency_s": latency,
        "fairness_limit": FAIRNESS,
        "fair": fair_ok,
        "seconds": seconds,
        "import_seconds": imported.seconds,
        "index_warm_seconds": warm_seconds,
        "requests": len(clients.latencies),
        "double_leases": doubles,
        "handed_out": unique,
        "left_over": left_over,
        "writes_per_album": writes,
        "server_rss_bytes": server_rss,
        "server_peak_rss_bytes": server_peak,
        "load_average_end": load_end,
        "errors": clients.errors[:20],
        "correct": correct,
    }
    write_results(NAME, figures, quick=quick)
    return figures
