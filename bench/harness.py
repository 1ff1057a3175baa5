"""What every benchmark shares: a scratch server, the raw CouchDB baselines,
the app as a subprocess, generated inventories, and the results files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from app import bundled

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
APP_START_TIMEOUT = 60.0

# Names for generated inventories; a few need NFC normalisation, a few need CSV quoting.
FIRST_NAMES = ("Bruce", "Joni", "Björk", "Sigur", "Neil", "Beyoncé", "Nina", "Miles", "Kate", "Tom")
LAST_NAMES = (
    "Cockburn",
    "Mitchell",
    "Guðmundsdóttir",
    "Rós",
    "Young",
    "Knowles",
    "Simone",
    "Davis",
    "Bush",
    'Waits "Jr."',
)
WORDS = (
    "Night",
    "Live",
    "Blue",
    "River",
    "Songs",
    "Hearts",
    "Dreams",
    "Road",
    "Fire",
    "Stone",
    "Gold",
    "Echoes",
    "Rain",
    "Morning",
    "Ghosts",
    "Lights",
)


def quick_from_env() -> bool:
    return os.environ.get("BENCH_QUICK", "").strip() not in ("", "0", "false")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def say(name: str, text: str) -> None:
    print(f"{name}: {text}", flush=True)


@contextlib.contextmanager
def scratch_server(name: str) -> Iterator[tuple[str, Path]]:
    """A bundled server on a free port in a fresh temporary directory; both go afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"distleech-bench-{name}-") as tmp:
        work = Path(tmp)
        with bundled.running(work / "couch") as url:
            yield url, work


def inventory_rows(start: int, stop: int) -> Iterator[tuple[str, str]]:
    """Unique (artist, title) pairs: the number in the title keeps every row distinct."""
    rng = random.Random(start)
    for i in range(start, stop):
        artist = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        if i % 5 == 0:
            artist += ", The Band"
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} Vol. {i}"
        yield artist, title


def numbered_rows(start: int, stop: int) -> Iterator[tuple[int, str, str]]:
    """inventory_rows as read_inventory_csv yields them: (line number, artist, title)."""
    for offset, (artist, title) in enumerate(inventory_rows(start, stop)):
        yield start + offset + 2, artist, title


def write_inventory_csv(path: Path, rows: int) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("Artist Name", "Album Title"))
        writer.writerows(inventory_rows(0, rows))
    return path


# ---------------------------------------------------------------- raw baselines


def raw_bulk_docs_rate(
    url: str, docs: int, *, batch: int = 1000, design: dict | None = None
) -> float:
    """Docs/s of _bulk_docs of plain small docs, in batches, into a scratch database.

    One client, one batch at a time, as the importer writes. With `design`, that
    design document is stored first (to see what validate_doc_update costs).
    """
    name = f"bench_raw_{uuid.uuid4().hex[:10]}"
    session = requests.Session()
    session.put(f"{url}/{name}", timeout=30).raise_for_status()
    try:
        if design is not None:
            session.put(
                f"{url}/{name}/{design['_id']}",
                data=json.dumps(design),
                headers=JSON_HEADERS,
                timeout=30,
            ).raise_for_status()
        started = time.perf_counter()
        for first in range(0, docs, batch):
            body = {
                "docs": [
                    {"_id": f"raw:{i:08d}", "type": "raw", "n": i}
                    for i in range(first, min(docs, first + batch))
                ]
            }
            response = session.post(
                f"{url}/{name}/_bulk_docs", data=json.dumps(body), headers=JSON_HEADERS, timeout=300
            )
            response.raise_for_status()
            failed = [row for row in response.json() if "error" in row]
            if failed:
                raise RuntimeError(f"raw _bulk_docs refused {len(failed)} docs: {failed[0]}")
        elapsed = time.perf_counter() - started
    finally:
        with contextlib.suppress(requests.RequestException):
            session.delete(f"{url}/{name}", timeout=120)
    return docs / elapsed


def validating_design() -> dict[str, Any]:
    """The app's events design document: its validate_doc_update runs on every write."""
    from app.designdocs import build_design_docs

    return build_design_docs()["_design/events"]


def median_latency(
    session: requests.Session,
    url: str,
    *,
    samples: int,
    warmup: int,
    headers: dict[str, str] | None = None,
) -> float:
    """Median seconds of GET url (keep-alive session) after `warmup` unmeasured calls."""
    for _ in range(warmup):
        session.get(url, headers=headers, timeout=300).raise_for_status()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=300)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times)


def user_doc_count(url: str, database: str) -> int:
    """Documents in a database, design documents not counted."""
    session = requests.Session()
    info = session.get(f"{url}/{database}", timeout=60).json()
    design = session.get(
        f"{url}/{database}/_all_docs",
        params={"startkey": '"_design/"', "endkey": '"_design0"'},
        timeout=60,
    ).json()["rows"]
    return int(info["doc_count"]) - len(design)


def update_seq(url: str, database: str) -> int | None:
    """The database's update sequence as a number, or None where it is opaque (CouchDB 3)."""
    seq = requests.get(f"{url}/{database}", timeout=60).json().get("update_seq")
    return seq if isinstance(seq, int) else None


# ---------------------------------------------------------------- the app as a subprocess


def distleech_command(*args: str) -> list[str]:
    """The installed `distleech` script beside this interpreter, else `python -m app.cli`."""
    script = Path(sys.executable).with_name("distleech")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "app.cli", *args]


def app_env(url: str, database: str, work: Path) -> dict[str, str]:
    """The environment of an app subprocess: this server and database, no config.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTLEECH_")}
    env.update(
        DISTLEECH_COUCHDB__URL=url,
        DISTLEECH_COUCHDB__DATABASE=database,
        DISTLEECH_CONFIG=str(work / "no-config.yaml"),  # does not exist: defaults + env only
        DISTLEECH_SCHEDULER__ENABLED="false",
    )
    return env


@dataclasses.dataclass
class ChildRun:
    """A finished subprocess: exit code, wall and CPU seconds, its own peak RSS, its output."""

    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    output: str


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path) -> ChildRun:
    """Run a command to completion and measure it.

    os.wait4 gives this one child's resource usage; getrusage(RUSAGE_CHILDREN)
    would give the maximum over every child waited for so far, so a second,
    smaller run could not be told apart from the first.
    """
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ChildRun(
        returncode=process.returncode,
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        output=log_path.read_text(encoding="utf-8", errors="replace"),
    )


def _wait_for_app(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll until the app answers (401 without a token is an answer) or give up."""
    deadline = time.monotonic() + APP_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"the app exited with {process.returncode} at start-up:\n{tail}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/metadata/1", timeout=5).status_code in (200, 401):
                return
        time.sleep(0.2)
    raise RuntimeError(f"the app at {base} did not answer in {APP_START_TIMEOUT:.0f} s")


@contextlib.contextmanager
def serving(url: str, database: str, work: Path, *, workers: int = 2) -> Iterator[str]:
    """Run `distleech serve` (gunicorn) on a free port for the block; yield its base URL."""
    port = bundled.free_port()
    log_path = work / f"app-{port}.log"
    cmd = distleech_command(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            env=app_env(url, database, work),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_app(base, process, log_path)
        # The first worker answered; give the others a moment to finish loading the app.
        time.sleep(2.0)
        yield base
    finally:
        _stop_app(process)


def _stop_app(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers gracefully
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # our own session: the master and its workers
        process.wait()


# ---------------------------------------------------------------- results


def write_results(name: str, figures: dict[str, Any], *, quick: bool) -> Path:
    """Store one benchmark's figures as bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "quick": quick,
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
