"""verify: MB/s of `ingest scan --verify` against `sha1sum` over the same files.

One directory of random files (1 GiB; 512 MiB with --quick) is registered
with its .torrent (made by torf), and the app is served as in production. Both
sides read from the page cache (the files are read once first), so the figure
compares hashing and reading, not the disk. Each side runs ROUNDS times, in
turn, and the medians are compared:

- the scanner: `distleech ingest scan VOLUME --verify` as a subprocess: its
  listing, the dry-run match, fetching the .torrent, the piece check of
  every byte, and recording the result;
- `sha1sum FILE…`: one SHA-1 per file, the least any check of the data costs.

The piece check alone (worker.verify.verify_pieces in this process) is reported
too. Target: the scan at >= 0.8 x sha1sum's MB/s.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    distleech_command,
    load_average,
    run_measured,
    say,
    scratch_server,
    serving,
    verdict,
    write_results,
)

NAME = "verify"
DATABASE = "bench_verify"
# Quick still hashes 512 MiB: the scanner's start-up (about a second to import the
# app) would otherwise be most of what is measured.
TOTAL_BYTES = {"full": 1 << 30, "quick": 512 << 20}
FILES = 8
ROUNDS = 3
TARGET = 0.8
CHUNK = 8 << 20


def make_files(root: Path, total: int) -> list[Path]:
    """FILES files of seeded random bytes, sizes a little uneven so pieces span files."""
    rng = random.Random(7)
    root.mkdir(parents=True)
    paths = []
    remaining = total
    for index in range(FILES):
        size = remaining if index == FILES - 1 else total // FILES + rng.randint(-4096, 4096)
        remaining -= size
        path = root / f"{index + 1:02d} - track.flac"
        with path.open("wb") as fh:
            left = size
            while left:
                block = rng.randbytes(min(CHUNK, left))
                fh.write(block)
                left -= len(block)
        paths.append(path)
    return paths


def read_all(paths: list[Path]) -> None:
    """Read every file once, so that both sides find them in the page cache."""
    for path in paths:
        with path.open("rb", buffering=0) as fh:
            while fh.read(CHUNK):
                pass


def sha1sum_seconds(paths: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["sha1sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL, timeout=3600
    )
    return time.perf_counter() - started


def in_process_seconds(root: Path, data: bytes) -> float:
    """The piece check alone: what --verify runs over one directory."""
    from metainfo.torrent import parse_torrent_file
    from worker.verify import layout_for, verify_pieces

    parsed = parse_torrent_file(data)
    layout = layout_for(parsed, root, "directory", [f.path for f in parsed.files])
    assert layout is not None
    started = time.perf_counter()
    result = verify_pieces(layout, parsed.piece_length, parsed.pieces)
    seconds = time.perf_counter() - started
    if result.status != "verified":
        raise RuntimeError(f"the piece check failed: {result}")
    return seconds


def register(base: str, token: str, data: bytes) -> None:
    import requests

    response = requests.post(
        f"{base}/api/torrents",
        files={"torrent": ("bench.torrent", data)},
        data={"site": "bench.example", "torrentId": "1"},
        headers={"X-AUTHENTICATION": token},
        timeout=300,
    )
    response.raise_for_status()


def scan_seconds(base: str, token: str, volume: Path, work: Path, round_: int) -> float:
    cmd = distleech_command("ingest", "scan", str(volume), "--verify", "--server", base, "--json")
    run = run_measured(cmd, dict(os.environ, DISTLEECH_TOKEN=token), work / f"scan-{round_}.log")
    if run.returncode != 0 or '"verified"' not in run.output:
        raise RuntimeError(f"the verifying scan failed ({run.returncode}):\n{run.output[-2000:]}")
    return run.seconds


def run(quick: bool = False) -> dict[str, Any]:
    import torf

    from app.accounts.auth import issue_token
    from app.projectors import register_projectors
    from app.store.couch import CouchServer
    from app.store.setup import init_database
    from app.timeutil import utcnow

    register_projectors()

    total = TOTAL_BYTES["quick" if quick else "full"]
    megabytes = total / 1e6
    say(NAME, f"{megabytes:,.0f} MB in {FILES} files; load average {load_average():.1f} at start")
    with scratch_server(NAME) as (url, work):
        volume = work / "ingest"
        paths = make_files(volume / "Bench Album", total)
        torrent = torf.Torrent(path=volume / "Bench Album", private=True)
        torrent.generate()
        data = bytes(torrent.dump())
        db = CouchServer(url).database(DATABASE)
        init_database(db, warm=False)
        token = issue_token(db, "bench-verifier", "worker", actor="bench", now=utcnow())
        read_all(paths)
        scans, sums, checks = [], [], []
        with serving(url, DATABASE, work) as base:
            register(base, token, data)
            for round_ in range(ROUNDS):
                sums.append(sha1sum_seconds(paths))
                scans.append(scan_seconds(base, token, volume, work, round_))
                checks.append(in_process_seconds(volume / "Bench Album", data))
    scan_rate = megabytes / statistics.median(scans)
    sum_rate = megabytes / statistics.median(sums)
    check_rate = megabytes / statistics.median(checks)
    ratio = scan_rate / sum_rate
    say(
        NAME,
        f"scan --verify {scan_rate:,.0f} MB/s = {ratio:.2f} x sha1sum ({sum_rate:,.0f} MB/s); "
        f"target >= {TARGET:.2f}: {verdict(ratio >= TARGET)}",
    )
    say(
        NAME,
        f"  the piece check alone: {check_rate:,.0f} MB/s = {check_rate / sum_rate:.2f} x "
        f"sha1sum; piece size {torrent.piece_size:,} B, {ROUNDS} rounds each, medians",
    )
    figures = {
        "passed": ratio >= TARGET,
        "megabytes": megabytes,
        "files": FILES,
        "piece_size": torrent.piece_size,
        "scan_mb_per_s": scan_rate,
        "sha1sum_mb_per_s": sum_rate,
        "piece_check_mb_per_s": check_rate,
        "ratio": ratio,
        "piece_check_ratio": check_rate / sum_rate,
        "target": TARGET,
        "scan_seconds": scans,
        "sha1sum_seconds": sums,
        "piece_check_seconds": checks,
    }
    write_results(NAME, figures, quick=quick)
    return figures
