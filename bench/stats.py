"""stats: GET /stats (JSON) latency at a small and a large inventory, against a raw GET.

/stats serves counts from a snapshot document that the scheduler refreshes,
so its latency must not grow with the data. At each size the snapshot is
refreshed first (the job, not the request, pays for counting) and the view
indexes are brought up to date; then the median of SAMPLES requests is
compared with the median raw CouchDB single-document GET on the same server,
the two sampled in turn.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from bench.harness import (
    load_average,
    numbered_rows,
    say,
    scratch_server,
    serving,
    verdict,
    write_results,
)

NAME = "stats"
DATABASE = "bench_stats"
SIZES = {"full": (10_000, 200_000), "quick": (1_000, 5_000)}
SAMPLES = 20
WARMUP = 5
# "Does not grow": the large inventory's ratio to raw GET within 1.5 x the small one's.
GROWTH_LIMIT = 1.5
INDEX_TIMEOUT = 3600.0  # building an index over 400 k docs takes minutes on the bundled server
ACCEPT_JSON = {"Accept": "application/json"}

SnapshotJob = Callable[[Any, datetime], Any]


def find_snapshot_job() -> tuple[SnapshotJob | None, str]:
    """The scheduler's snapshot_stats(db, now) if it exists yet (imported lazily)."""
    with contextlib.suppress(ImportError):
        from scheduler import jobs

        if callable(job := getattr(jobs, "snapshot_stats", None)):
            return job, "scheduler.jobs.snapshot_stats"
    with contextlib.suppress(ImportError):
        from app import stats as app_stats

        if callable(job := getattr(app_stats, "snapshot_stats", None)):
            return (
                job,
                "app.stats.snapshot_stats (scheduler.jobs.snapshot_stats does not exist yet)",
            )
    return None, "no snapshot_stats job exists yet: the snapshot is not refreshed"


def _warm_indexes(db: Any, ddoc: str) -> float:
    """Bring every view of one design document up to date, concurrently; return seconds.

    pouchdb-server keeps one index per view (not per design document), so each
    view is queried; that is the bundled server's cost after a bulk import,
    not the request path's.
    """
    views = sorted(db.get(f"_design/{ddoc}").get("views") or {})
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, len(views))) as pool:
        queries = [pool.submit(db.view, ddoc, view, limit=0, reduce=False) for view in views]
        for query in queries:
            query.result()  # re-raise a failed build here
    return time.perf_counter() - started


def _measure_size(
    url: str, base: str, db: Any, size: int, job: SnapshotJob | None
) -> dict[str, Any]:
    from app.timeutil import utcnow

    figures: dict[str, Any] = {"albums": size}
    figures["index_seconds"] = _warm_indexes(db, "stats")
    if job is not None:
        started = time.perf_counter()
        job(db, utcnow())
        figures["snapshot_seconds"] = time.perf_counter() - started
    session = requests.Session()
    answer = session.get(f"{base}/stats", headers=ACCEPT_JSON, timeout=INDEX_TIMEOUT)
    answer.raise_for_status()
    figures["reported_albums"] = answer.json().get("albums")
    first = db.server.get_json(f"{db.path}/_all_docs", startkey="album:", limit=1)["rows"]
    raw_url = f"{url}/{DATABASE}/{quote(first[0]['id'], safe='')}"
    figures["stats_s"], figures["raw_get_s"] = _paired_medians(
        session, (f"{base}/stats", ACCEPT_JSON), (raw_url, {})
    )
    figures["ratio"] = figures["stats_s"] / figures["raw_get_s"]
    return figures


def _paired_medians(session: requests.Session, *targets: tuple[str, dict[str, str]]) -> list[float]:
    """Median seconds of GET for each (url, headers), sampled in turn.

    Alternating the requests lets both see the same moments of a busy machine.
    """
    times: list[list[float]] = [[] for _ in targets]
    for sample in range(WARMUP + SAMPLES):
        for slot, (target_url, headers) in enumerate(targets):
            started = time.perf_counter()
            response = session.get(target_url, headers=headers, timeout=300)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if sample >= WARMUP:
                times[slot].append(elapsed)
    return [statistics.median(t) for t in times]


def _stats_missing(base: str) -> str | None:
    """Why /stats cannot be measured (not served yet), or None when it answers."""
    response = requests.get(f"{base}/stats", headers=ACCEPT_JSON, timeout=120)
    if response.status_code == 200 and response.headers.get("Content-Type", "").startswith(
        "application/json"
    ):
        return None
    return f"GET /stats answered {response.status_code} {response.headers.get('Content-Type')}"


def _skip(reason: str, quick: bool) -> dict[str, Any]:
    say(NAME, f"SKIPPED: {reason}")
    figures = {"passed": None, "skipped": reason}
    write_results(NAME, figures, quick=quick)
    return figures


def run(quick: bool = False) -> dict[str, Any]:
    from app.projectors import register_projectors
    from app.queues.albums import import_albums
    from app.store.couch import CouchServer
    from app.store.setup import init_database
    from app.timeutil import utcnow

    register_projectors()

    mode = "quick" if quick else "full"
    sizes = SIZES[mode]
    job, job_name = find_snapshot_job()
    say(
        NAME,
        f"GET /stats at {' and '.join(f'{s:,}' for s in sizes)} albums; snapshot by "
        f"{job_name}; load average {load_average():.1f} at start",
    )
    results = []
    with scratch_server(NAME) as (url, work):
        db = CouchServer(url, timeout=INDEX_TIMEOUT).database(DATABASE)
        init_database(db, warm=False)
        with serving(url, DATABASE, work) as base:
            if reason := _stats_missing(base):
                return _skip(reason, quick)
            imported = 0
            for size in sizes:
                began = time.perf_counter()
                import_albums(db, numbered_rows(imported, size), actor="bench", now=utcnow())
                imported = size
                import_seconds = time.perf_counter() - began
                figures = _measure_size(url, base, db, size, job)
                figures["import_seconds"] = import_seconds
                results.append(figures)
                say(
                    NAME,
                    f"  {size:,} albums: /stats {figures['stats_s'] * 1000:.1f} ms = "
                    f"{figures['ratio']:.1f} x raw GET ({figures['raw_get_s'] * 1000:.1f} ms); "
                    f"reports {figures['reported_albums']} albums; import {import_seconds:.0f} s, "
                    f"index update {figures['index_seconds']:.0f} s, snapshot job "
                    f"{figures.get('snapshot_seconds', float('nan')):.1f} s",
                )

    small, large = results
    growth = large["stats_s"] / small["stats_s"]
    raw_growth = large["raw_get_s"] / small["raw_get_s"]
    # Judged on the ratio to raw GET, as every figure here: a busier moment slows both.
    ratio_growth = large["ratio"] / small["ratio"]
    flat = ratio_growth <= GROWTH_LIMIT
    counts_ok = job is None or all(r["reported_albums"] == r["albums"] for r in results)
    say(
        NAME,
        f"{large['stats_s'] * 1000:.1f} ms at {large['albums']:,} albums = {large['ratio']:.1f} x "
        f"raw GET ({large['raw_get_s'] * 1000:.1f} ms); the ratio is x{ratio_growth:.2f} of the "
        f"{small['albums']:,}-album one (latency x{growth:.2f}, raw GET x{raw_growth:.2f}); "
        f"target flat (<= x{GROWTH_LIMIT:.1f}): {verdict(flat)}",
    )
    if not counts_ok:
        say(NAME, "  the reported album counts do not match the inventory after a snapshot refresh")
    figures = {
        "passed": flat and counts_ok,
        "snapshot_job": job_name,
        "growth": growth,
        "ratio_growth": ratio_growth,
        "raw_get_growth": raw_growth,
        "growth_limit": GROWTH_LIMIT,
        "counts_match": counts_ok,
        "sizes": results,
    }
    write_results(NAME, figures, quick=quick)
    return figures
