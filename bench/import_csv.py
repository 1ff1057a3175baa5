"""import: `distleech import-csv` against raw _bulk_docs; RSS; then warming every index.

The importer runs as the real command in a subprocess, while the app serves
the same database (as on a live site). Figures, from one run on one server:

- rows/s of the large file ÷ raw _bulk_docs docs/s (one client, batches of
  1,000) measured right before: >= 0.5;
- the importer's peak RSS must not grow with the file: a small and a large
  file go into separate databases and their peaks are compared; the bundled
  server's RSS (current and peak, from /proc) is reported beside it;
- then every view of every design document of the read model and of the
  event log (`<db>_events`, when the store has one) is read once, as a
  warmer does: the seconds until all are warm ÷ the seconds one trivial map
  view takes to build over the same number of plain documents (reported, no
  target: it shows what the read model's indexes cost);
- `GET /stats` is sampled while that warming happens: p50 and max, and how
  many samples failed (the issue saw 2-minute hangs and 503s).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import requests

from bench.harness import (
    JSON_HEADERS,
    drop_database,
    events_database,
    fill_plain_docs,
    format_latencies,
    import_inventory,
    load_average,
    percentiles,
    process_rss,
    raw_bulk_docs_rate,
    read_model_designs,
    say,
    scratch_server_process,
    serving,
    user_doc_count,
    verdict,
    write_results,
)

NAME = "import"
SIZES = {"full": (20_000, 200_000), "quick": (2_000, 10_000)}
RAW_DOCS = {"full": 30_000, "quick": 10_000}
SMALL_DB, LARGE_DB = "bench_import_small", "bench_import_large"
TARGET = 0.5
RSS_FLAT = 1.15  # the large file's peak may be at most 15 % above the small file's
STATS_EVERY = 0.5  # seconds between /stats samples while indexes warm
MIB = 1024 * 1024


def design_views(url: str, database: str) -> list[tuple[str, str, bool]]:
    """(design doc name, view name, has a reduce) for every view stored in a database."""
    rows = requests.get(
        f"{url}/{database}/_all_docs",
        params={"startkey": '"_design/"', "endkey": '"_design0"', "include_docs": "true"},
        timeout=120,
    ).json()["rows"]
    found = []
    for row in rows:
        ddoc = row["id"].removeprefix("_design/")
        for view, code in sorted(((row.get("doc") or {}).get("views") or {}).items()):
            found.append((ddoc, view, "reduce" in code))
    return found


def query_view_cold(
    session: requests.Session, url: str, database: str, ddoc: str, view: str, reduce: bool
) -> float:
    """Seconds one fresh read of a view takes: the time to bring its index up to date."""
    params = {"limit": "0", **({"reduce": "false"} if reduce else {})}
    started = time.perf_counter()
    response = session.get(
        f"{url}/{database}/_design/{ddoc}/_view/{view}", params=params, timeout=7200
    )
    response.raise_for_status()
    return time.perf_counter() - started


def raw_view_build_seconds(url: str, docs: int) -> float:
    """Seconds to build one trivial map view over `docs` plain documents, from cold."""
    name = f"bench_rawview_{uuid.uuid4().hex[:10]}"
    try:
        fill_plain_docs(url, name, docs)
        design = {
            "_id": "_design/raw",
            "views": {"by_n": {"map": "function (doc) { emit(doc.n); }"}},
        }
        requests.put(
            f"{url}/{name}/_design/raw", data=json.dumps(design), headers=JSON_HEADERS, timeout=60
        ).raise_for_status()
        return query_view_cold(requests.Session(), url, name, "raw", "by_n", False)
    finally:
        drop_database(url, name)


class StatsSampler:
    """GET /stats (JSON) one call after another, with a pause, until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                response = session.get(
                    f"{self.base}/stats", headers={"Accept": "application/json"}, timeout=300
                )
                ok = response.status_code == 200
                failure = "" if ok else f"{response.status_code}: {response.text[:120]}"
            except requests.RequestException as exc:
                failure = f"{type(exc).__name__}: {exc}"
            self.latencies.append(time.perf_counter() - began)
            if failure:
                self.failures.append(failure)
            self._stop.wait(STATS_EVERY)

    def __enter__(self) -> StatsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _warm_every_index(url: str) -> tuple[float, list[tuple[str, float]], int]:
    """Read each view of the read model and the log once: (seconds, per view, documents)."""
    databases = [LARGE_DB, *filter(None, [events_database(url, LARGE_DB)])]
    session = requests.Session()
    per_view: list[tuple[str, float]] = []
    started = time.perf_counter()
    for database in databases:
        for ddoc, view, reduce in design_views(url, database):
            seconds = query_view_cold(session, url, database, ddoc, view, reduce)
            per_view.append((f"{database}/{ddoc}/{view}", seconds))
    total = time.perf_counter() - started
    return total, per_view, sum(user_doc_count(url, db) for db in databases)


def _import(url: str, work: Any, database: str, rows: int) -> dict[str, Any]:
    run = import_inventory(url, database, work, rows)
    return {
        "rows": rows,
        "seconds": round(run.seconds, 3),
        "rows_per_s": rows / run.seconds,
        "importer_cpu_seconds": round(run.cpu_seconds, 3),
        "peak_rss_bytes": run.max_rss_bytes,
    }


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    small, large = SIZES[mode]
    say(NAME, f"{small:,} and {large:,} rows; load average {load_average():.1f} at start")
    with scratch_server_process(NAME) as server:
        url, work = server.url, server.work
        first = _import(url, work, SMALL_DB, small)
        with serving(url, LARGE_DB, work) as base:
            raw = raw_bulk_docs_rate(url, RAW_DOCS[mode])
            second = _import(url, work, LARGE_DB, large)
            raw_after = raw_bulk_docs_rate(url, RAW_DOCS[mode])
            raw_designs = raw_bulk_docs_rate(url, RAW_DOCS[mode], designs=read_model_designs())
            rss_imported, peak_imported = process_rss(server.pid)
            with StatsSampler(base) as during:
                warm, per_view, docs = _warm_every_index(url)
            with StatsSampler(base) as after:
                time.sleep(5 * STATS_EVERY)
        rss_warm, rss_peak = process_rss(server.pid)
        raw_view = raw_view_build_seconds(url, docs)

    ratio = second["rows_per_s"] / raw
    speed_ok = ratio >= TARGET
    growth = second["peak_rss_bytes"] / first["peak_rss_bytes"]
    rss_ok = growth <= RSS_FLAT
    cpu = second["importer_cpu_seconds"]
    docs_per_row = docs / large
    stats_during, stats_after = percentiles(during.latencies), percentiles(after.latencies)
    say(
        NAME,
        f"{second['rows_per_s']:,.0f} rows/s = {ratio:.2f} x raw _bulk_docs ({raw:,.0f} docs/s); "
        f"target >= {TARGET:.2f}: {verdict(speed_ok)}",
    )
    say(
        NAME,
        f"  = {second['rows_per_s'] / raw_designs:.2f} x raw _bulk_docs into a database that "
        f"holds the read model's design documents ({raw_designs:,.0f} docs/s): pouchdb-server "
        f"reads each of them for every document written, validator or not",
    )
    say(
        NAME,
        f"importer peak RSS {first['peak_rss_bytes'] / MIB:.1f} MiB at {small:,} rows, "
        f"{second['peak_rss_bytes'] / MIB:.1f} MiB at {large:,} rows (x{growth:.2f}); "
        f"target flat (<= x{RSS_FLAT:.2f}): {verdict(rss_ok)}",
    )
    say(
        NAME,
        f"  {large:,} rows in {second['seconds']:.1f} s, importer CPU {cpu:.1f} s "
        f"({cpu / second['seconds']:.0%} of wall time); {docs:,} documents "
        f"({docs_per_row:.2f} per row, log included); raw _bulk_docs after: "
        f"{raw_after:,.0f} docs/s ({raw_after / raw - 1:+.0%} drift)",
    )
    say(
        NAME,
        f"every index warm ({len(per_view)} views) in {warm:.1f} s = {warm / raw_view:.1f} x "
        f"one trivial view over {docs:,} plain docs ({raw_view:.1f} s); slowest: "
        + ", ".join(f"{name} {s:.1f} s" for name, s in sorted(per_view, key=lambda v: -v[1])[:3]),
    )
    say(
        NAME,
        f"/stats while warming: {len(during.latencies)} samples, "
        f"{format_latencies(stats_during)}, failed {len(during.failures)}; after: "
        f"{format_latencies(stats_after)}",
    )
    say(
        NAME,
        f"  server RSS {rss_imported / MIB:,.0f} MiB after the import (peak so far "
        f"{peak_imported / MIB:,.0f}), {rss_warm / MIB:,.0f} MiB after warming (peak "
        f"{rss_peak / MIB:,.0f}); load average {load_average():.1f}",
    )
    for failure in during.failures[:3]:
        say(NAME, f"  /stats failed: {failure}")
    figures = {
        "passed": speed_ok and rss_ok,
        "raw_bulk_docs_per_s": raw,
        "raw_bulk_docs_per_s_after": raw_after,
        "raw_bulk_docs_with_designs_per_s": raw_designs,
        "ratio_with_designs": second["rows_per_s"] / raw_designs,
        "ratio": ratio,
        "target": TARGET,
        "speed_passed": speed_ok,
        "rss_growth": growth,
        "rss_flat_limit": RSS_FLAT,
        "rss_passed": rss_ok,
        "small": first,
        "large": second,
        "documents": docs,
        "docs_per_row": docs_per_row,
        "warm_seconds": warm,
        "warm_per_view_s": dict(per_view),
        "raw_view_build_seconds": raw_view,
        "warm_ratio": warm / raw_view,
        "stats_while_warming_s": stats_during,
        "stats_failures_while_warming": during.failures[:20],
        "stats_after_warm_s": stats_after,
        "server_rss_after_import_bytes": rss_imported,
        "server_peak_rss_after_import_bytes": peak_imported,
        "server_rss_after_warm_bytes": rss_warm,
        "server_peak_rss_bytes": rss_peak,
    }
    write_results(NAME, figures, quick=quick)
    return figures
