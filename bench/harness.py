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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from app.processes import bundled

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
    url: str, docs: int, *, batch: int = 1000, designs: Sequence[dict[str, Any]] = ()
) -> float:
    """Docs/s of _bulk_docs of plain small docs, in batches, into a scratch database.

    One client, one batch at a time, as the importer writes. With `designs`,
    those design documents are stored first: pouchdb-server reads every design
    document of a database for each document written, validator or not, so
    this shows what the app's design documents alone cost a raw write there.
    """
    name = f"bench_raw_{uuid.uuid4().hex[:10]}"
    session = requests.Session()
    session.put(f"{url}/{name}", timeout=30).raise_for_status()
    try:
        for design in designs:
            session.put(
                f"{url}/{name}/{design['_id']}",
                data=json.dumps(design),
                headers=JSON_HEADERS,
                timeout=30,
            ).raise_for_status()
        rate = _write_plain_docs(session, url, name, docs, batch)
    finally:
        with contextlib.suppress(requests.RequestException):
            session.delete(f"{url}/{name}", timeout=120)
    return rate


def read_model_designs() -> list[dict[str, Any]]:
    """The read model's design documents (views only, no validator)."""
    from app.store.designdocs import build_design_docs

    return list(build_design_docs().values())


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


# ---------------------------------------------------------------- issue 8: leases, imports, rebuild


@dataclasses.dataclass
class ScratchServer:
    """A bundled server for one benchmark: its URL, work directory and process id."""

    url: str
    work: Path
    pid: int


@contextlib.contextmanager
def scratch_server_process(name: str) -> Iterator[ScratchServer]:
    """As scratch_server, but also yield the server's pid so its RSS can be read in /proc."""
    with tempfile.TemporaryDirectory(prefix=f"distleech-bench-{name}-") as tmp:
        work = Path(tmp)
        port = bundled.free_port()
        process = bundled.start(work / "couch", port)
        url = f"http://127.0.0.1:{port}"
        try:
            bundled.wait_until_up(url)
            yield ScratchServer(url, work, process.pid)
        finally:
            bundled.stop(process)


def process_rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size in bytes of a running process (VmRSS, VmHWM)."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024  # kB
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of a sample (nearest rank); NaN for an empty sample."""
    if not values:
        return {key: float("nan") for key in ("p50", "p95", "p99", "max")}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}


def format_latencies(figures: dict[str, float]) -> str:
    return ", ".join(f"{key} {value * 1000:,.0f} ms" for key, value in figures.items())


def database_exists(url: str, database: str) -> bool:
    return requests.head(f"{url}/{database}", timeout=60).status_code == 200


def events_database(url: str, database: str) -> str | None:
    """The event log beside a read model (`<db>_events`) when the store has one."""
    name = f"{database}_events"
    return name if database_exists(url, name) else None


def run_cli(url: str, database: str, work: Path, *args: str) -> str:
    """Run one `distleech` command against the benchmark's database; return its stdout."""
    done = subprocess.run(
        distleech_command(*args),
        env=app_env(url, database, work),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"distleech {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return done.stdout


def import_inventory(url: str, database: str, work: Path, rows: int) -> ChildRun:
    """Write a CSV of `rows` albums and import it with the real `distleech import-csv`.

    Going through the command rather than the store's functions keeps the
    benchmarks working while the store behind it changes.
    """
    csv_path = write_inventory_csv(work / f"inventory-{database}-{rows}.csv", rows)
    run = run_measured(
        distleech_command("import-csv", "--json", str(csv_path)),
        app_env(url, database, work),
        work / f"import-{database}.log",
    )
    if run.returncode != 0:
        raise RuntimeError(
            f"distleech import-csv exited with {run.returncode}:\n{run.output[-2000:]}"
        )
    summary = json.loads(next(line for line in run.output.splitlines() if line.startswith("{")))
    if summary.get("added") != rows or summary.get("rejected"):
        raise RuntimeError(
            f"expected {rows} rows added, none rejected; the importer said {summary}"
        )
    return run


def issue_worker_token(url: str, database: str, work: Path) -> str:
    """A worker token made by `distleech token add` (printed once on stdout)."""
    output = run_cli(url, database, work, "token", "add", "bench-worker", "--role", "worker")
    return output.strip().splitlines()[-1].strip()


def fill_plain_docs(url: str, database: str, docs: int, *, batch: int = 1000) -> float:
    """Create a database of `docs` plain small documents; return the _bulk_docs docs/s."""
    session = requests.Session()
    session.put(f"{url}/{database}", timeout=30).raise_for_status()
    return _write_plain_docs(session, url, database, docs, batch)


def _write_plain_docs(
    session: requests.Session, url: str, database: str, docs: int, batch: int
) -> float:
    """Write `docs` plain small documents in batches, one at a time; return docs/s."""
    started = time.perf_counter()
    for first in range(0, docs, batch):
        body = {
            "docs": [
                {"_id": f"raw:{i:08d}", "type": "raw", "n": i}
                for i in range(first, min(docs, first + batch))
            ]
        }
        response = session.post(
            f"{url}/{database}/_bulk_docs", data=json.dumps(body), headers=JSON_HEADERS, timeout=300
        )
        response.raise_for_status()
        failed = [row for row in response.json() if "error" in row]
        if failed:
            raise RuntimeError(f"raw _bulk_docs refused {len(failed)} docs: {failed[0]}")
    return docs / (time.perf_counter() - started)


def drop_database(url: str, database: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.delete(f"{url}/{database}", timeout=300)
