"""match: `ingest scan` of 10 k directories against a registry of 100 k torrents,
against the raw keyed view lookups those directories need.

The registry is generated in bulk through the app's own decisions and
projections (app.registry.register.register_uploads, one commit per 1,000 torrents),
as Gazelle-style uploads: 8-15 files each, a top directory, a site id.
Directories are real (sparse files of the right sizes) on disk: 80 % hold a
registered torrent exactly (its download task must end filled), 10 % have
one file of the wrong size (must not match: the original client's bug), 10 %
are unknown. The scanner runs as a subprocess against the app served by
gunicorn, BATCH listings per request and JOBS requests in flight, and records
every match.

Baseline: for each directory, the two keyed view reads the matcher makes
(matching/by_file with the listing's [path, size] keys, matching/by_top_dir
with its name), sent raw to CouchDB from JOBS threads, one directory at a
time. The ratio is directories/s of the scan over directories/s of those raw
reads; target 0.5. The scanner's batches share their reads (one by_file and
one by_top_dir read per batch) as well as their writes; the baseline stays
per directory, the work the directories need on their own.
A re-scan (every match known already: reads only) is reported too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    FIRST_NAMES,
    LAST_NAMES,
    WORDS,
    distleech_command,
    load_average,
    run_measured,
    say,
    scratch_server,
    serving,
    verdict,
    write_results,
)

NAME = "match"
DATABASE = "bench_match"
SITE = "bench.example"
TORRENTS = {"full": 100_000, "quick": 10_000}
DIRECTORIES = {"full": 10_000, "quick": 1_000}
JOBS = 4
BATCH = 25
TARGET = 0.5
INDEX_TIMEOUT = 7200.0
WRONG_SIZE, UNKNOWN = "wrong_size", "unknown"


# ---------------------------------------------------------------- the generated registry


def torrent_layout(number: int) -> tuple[str, list[tuple[str, int]]]:
    """The top directory and files of generated torrent `number` (the same every run)."""
    rng = random.Random(number)
    artist = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {number}"
    top = f"{artist} - {title} ({rng.randint(1960, 2025)}) [FLAC]"
    files = [
        (
            f"{track:02d} - {rng.choice(WORDS)} {rng.choice(WORDS)}.flac",
            rng.randint(15 << 20, 60 << 20),
        )
        for track in range(1, rng.randint(8, 15) + 1)
    ]
    files += [("cover.jpg", rng.randint(50_000, 900_000)), (f"{title}.log", rng.randint(4, 9_000))]
    return top.replace("/", "-"), files


def info_hash_of(number: int) -> str:
    return hashlib.sha1(f"bench torrent {number}".encode()).hexdigest()


def _upload(number: int) -> Any:
    from app.queues.downloads import TorrentRef
    from app.registry.aggregate import Upload
    from metainfo.gazelle import GazelleTorrent
    from metainfo.torrent import TorrentFileEntry

    top, files = torrent_layout(number)
    gazelle = GazelleTorrent(
        torrent_id=number,
        info_hash=info_hash_of(number),
        name=top,
        single_file=False,
        files=tuple(TorrentFileEntry(path, size) for path, size in files),
        group={"id": number, "name": top.split(" - ", 1)[1], "artists": [top.split(" - ")[0]]},
        release={"format": "FLAC", "media": "CD"},
    )
    return Upload(TorrentRef(SITE, number), gazelle=gazelle)


def build_registry(db: Any, torrents: int, scanned: list[int]) -> None:
    """Create the scanned torrents' download tasks, then register every torrent in bulk."""
    from app.queues import downloads
    from app.queues.downloads import TorrentRef
    from app.registry.register import register_uploads
    from app.store.commit import commit
    from app.timeutil import utcnow

    for start in range(0, len(scanned), 1000):
        found = {n: [TorrentRef(SITE, n)] for n in scanned[start : start + 1000]}
        commit(db, downloads.creation_decisions(found), actor="bench", now=utcnow())
    register_uploads(db, (_upload(n) for n in range(1, torrents + 1)), actor="bench", now=utcnow())


# ---------------------------------------------------------------- the ingest volume


def plan_directories(torrents: int, directories: int) -> list[tuple[int, str | None]]:
    """(torrent number, fault) per directory: exact, one wrong size, or not registered."""
    step = torrents // directories
    plan: list[tuple[int, str | None]] = []
    for i in range(directories):
        number = 1 + i * step
        if i % 10 == 8:
            plan.append((number, WRONG_SIZE))
        elif i % 10 == 9:
            plan.append((torrents + 1 + i, UNKNOWN))  # never registered
        else:
            plan.append((number, None))
    return plan


def make_volume(volume: Path, plan: list[tuple[int, str | None]]) -> None:
    """Write each planned directory as sparse files of the planned sizes."""
    for number, fault in plan:
        top, files = torrent_layout(number)
        root = volume / top
        for index, (path, size) in enumerate(files):
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as fh:
                fh.truncate(size + 1 if fault == WRONG_SIZE and index == 0 else size)


def listings_of(volume: Path) -> list[tuple[str, list[tuple[str, int]]]]:
    """Each directory's name and files, as the scanner lists them."""
    from worker.volume import iter_entries

    return [(e.path.name, e.files) for e in iter_entries(volume)]


# ---------------------------------------------------------------- the raw baseline


def raw_lookups(url: str, listings: list[tuple[str, list[tuple[str, int]]]]) -> float:
    """Directories/s of the matcher's two keyed view reads per directory, sent raw."""
    from app.registry.keys import normalize_dir
    from metainfo.names import normalize_path

    local = threading.local()
    base = f"{url}/{DATABASE}/_design/matching/_view"

    def lookup(listing: tuple[str, list[tuple[str, int]]]) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        name, files = listing
        keys = [[normalize_path(path), size] for path, size in files]
        local.session.post(f"{base}/by_file", json={"keys": keys}, timeout=300).raise_for_status()
        local.session.get(
            f"{base}/by_top_dir", params={"key": json.dumps(normalize_dir(name))}, timeout=300
        ).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        list(pool.map(lookup, listings))
    return len(listings) / (time.perf_counter() - started)


# ---------------------------------------------------------------- the run


def _scan(base: str, token: str, volume: Path, work: Path, label: str) -> Any:
    cmd = distleech_command("ingest", "scan", str(volume), "--server", base)
    cmd += ["--jobs", str(JOBS), "--batch", str(BATCH), "--json"]
    env = dict(os.environ, DISTLEECH_TOKEN=token)
    run = run_measured(cmd, env, work / f"scan-{label}.log")
    if run.returncode != 0:
        raise RuntimeError(f"the scan failed ({run.returncode}):\n{run.output[-2000:]}")
    return run


def _check_outcomes(db: Any, plan: list[tuple[int, str | None]]) -> dict[str, int]:
    """Every exact directory's task filled, no faulty one's: counts of what is wrong."""
    from app.queues.downloads import task_doc_id

    tasks = db.get_many(task_doc_id(SITE, n) for n, fault in plan if fault != UNKNOWN)
    wrong = {"exact_not_filled": 0, "faulty_filled": 0}
    for number, fault in plan:
        state = tasks.get(task_doc_id(SITE, number), {}).get("state")
        if fault is None and state != "done":
            wrong["exact_not_filled"] += 1
        elif fault == WRONG_SIZE and state == "done":
            wrong["faulty_filled"] += 1
    return wrong


def _warm(db: Any) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = [pool.submit(db.view, "matching", v, limit=0) for v in ("by_file", "by_top_dir")]
        for build in builds:
            build.result()
    return time.perf_counter() - started


def run(quick: bool = False) -> dict[str, Any]:
    from app.accounts.auth import issue_token
    from app.projectors import register_projectors
    from app.store.couch import CouchServer
    from app.store.setup import init_database
    from app.timeutil import utcnow

    register_projectors()

    mode = "quick" if quick else "full"
    torrents, directories = TORRENTS[mode], DIRECTORIES[mode]
    say(
        NAME,
        f"{directories:,} directories against {torrents:,} registered torrents, scan --jobs "
        f"{JOBS} --batch {BATCH}; load average {load_average():.1f} at start",
    )
    plan = plan_directories(torrents, directories)
    with scratch_server(NAME) as (url, work):
        db = CouchServer(url, timeout=INDEX_TIMEOUT).database(DATABASE)
        init_database(db, warm=False)
        began = time.perf_counter()
        build_registry(db, torrents, [n for n, fault in plan if fault != UNKNOWN])
        registry_seconds = time.perf_counter() - began
        index_seconds = _warm(db)
        volume = work / "ingest"
        began = time.perf_counter()
        make_volume(volume, plan)
        listings = listings_of(volume)
        volume_seconds = time.perf_counter() - began
        say(
            NAME,
            f"  registry built in {registry_seconds:.0f} s, torrents views indexed in "
            f"{index_seconds:.0f} s, volume of {len(listings):,} directories in "
            f"{volume_seconds:.0f} s",
        )
        token = issue_token(db, "bench-scanner", "worker", actor="bench", now=utcnow())
        with serving(url, DATABASE, work) as base:
            raw = raw_lookups(url, listings)
            first = _scan(base, token, volume, work, "first")
            rescan = _scan(base, token, volume, work, "again")
            raw_after = raw_lookups(url, listings)
        wrong = _check_outcomes(db, plan)
    return _report(quick, directories, torrents, raw, raw_after, first, rescan, wrong)


def _report(
    quick: bool,
    directories: int,
    torrents: int,
    raw: float,
    raw_after: float,
    first: Any,
    rescan: Any,
    wrong: dict[str, int],
) -> dict[str, Any]:
    rate, rescan_rate = directories / first.seconds, directories / rescan.seconds
    baseline = (raw + raw_after) / 2
    ratio, rescan_ratio = rate / baseline, rescan_rate / baseline
    correct = not any(wrong.values())
    say(
        NAME,
        f"{rate:,.0f} directories/s = {ratio:.2f} x the raw keyed lookups they need "
        f"({baseline:,.0f} directories/s); target >= {TARGET:.2f}: {verdict(ratio >= TARGET)}",
    )
    say(
        NAME,
        f"  re-scan (nothing new to record): {rescan_rate:,.0f} directories/s = "
        f"{rescan_ratio:.2f} x raw; raw before {raw:,.0f}, after {raw_after:,.0f} directories/s; "
        f"scanner CPU {first.cpu_seconds:.1f} s",
    )
    say(NAME, f"outcomes: {wrong}; target all zero: {verdict(correct)}")
    figures = {
        "passed": ratio >= TARGET and correct,
        "directories": directories,
        "torrents": torrents,
        "jobs": JOBS,
        "batch": BATCH,
        "raw_directories_per_s": raw,
        "raw_directories_per_s_after": raw_after,
        "directories_per_s": rate,
        "ratio": ratio,
        "rescan_directories_per_s": rescan_rate,
        "rescan_ratio": rescan_ratio,
        "target": TARGET,
        "scan_seconds": first.seconds,
        "rescan_seconds": rescan.seconds,
        "wrong_outcomes": wrong,
        "correct": correct,
    }
    write_results(NAME, figures, quick=quick)
    return figures
