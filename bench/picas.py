"""picas: the classic CouchDB task queue (PiCaS, SURF), the peer the lease bench must beat.

Built as PiCaS builds it (sara-nl/picasclient: picas/clients.py, iterators.py,
documents.py, examples/create_views.py), so the comparison is with the real
thing and not with a straw man:

- tokens are documents `{type: "token", lock: 0, done: 0, ...}`, pushed with
  _bulk_docs (PiCaS's `save_documents`);
- design document `Monitor` holds the views PiCaS creates: `todo` (lock == 0
  and done == 0), `locked`, `done`, `error` and the `overview_total` reduce;
  on the bundled server each has its own index, on CouchDB they refresh
  together;
- a client claims one token at a time: read `todo` with limit=100 (fresh),
  pick one row at random (to spread contention), GET that document, set
  `lock` to the time and `hostname`, PUT it back with its `_rev`; a 409 means
  someone else took it, so try again, at most 10 times per claim
  (`allowed_failures`), after which PiCaS raises EnvironmentError and the
  pilot stops. Here the failure is counted and the client carries on, as the
  next pilot job would.

PiCaS has no batch claim: `save_documents` (_bulk_docs) is used to push or
reset tokens, never to lock them. Its claim also never checks the `lock`
field of the document it fetched, so a token locked between the view read
and the GET is locked a second time with the newer `_rev`: counted here as a
double claim, which is what the real client would do.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import threading
import time
from typing import Any

import requests

from bench.harness import (
    JSON_HEADERS,
    drop_database,
    format_latencies,
    load_average,
    percentiles,
    say,
    scratch_server,
    verdict,
    write_results,
)

NAME = "picas"
DESIGN = "Monitor"
WINDOW = 100  # get_single_from_view(view, window_size=100) in _claim_task
ALLOWED_FAILURES = 10
TASKS = {"full": 50_000, "quick": 3_000}
CLIENTS = 16
TIME_BUDGET = {"full": 600.0, "quick": 120.0}

_TOKEN_VIEW = """function (doc) {
  if (doc.type == "token") {
    if (CONDITION) {
      emit(doc._id, doc._id);
    }
  }
}"""
_CONDITIONS = {
    "todo": "doc.lock == 0 && doc.done == 0",
    "locked": "doc.lock > 0 && doc.done == 0",
    "done": "doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) == 0",
    "error": "doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) != 0",
}
_OVERVIEW = """function (doc) {
  if (doc.type == "token") {
BODY
  }
}""".replace(
    "BODY",
    "\n".join(f"    if ({cond}) {{ emit('{name}', 1); }}" for name, cond in _CONDITIONS.items()),
)


def monitor_design() -> dict[str, Any]:
    """PiCaS's `Monitor` design document, views as examples/create_views.py writes them."""
    views: dict[str, Any] = {
        name: {"map": _TOKEN_VIEW.replace("CONDITION", cond)} for name, cond in _CONDITIONS.items()
    }
    views["overview_total"] = {
        "map": _OVERVIEW,
        "reduce": "function (key, values, rereduce) { return sum(values); }",
    }
    return {"_id": f"_design/{DESIGN}", "language": "javascript", "views": views}


def create_queue(url: str, database: str, tasks: int, *, batch: int = 1000) -> float:
    """Create the token database, its views and `tasks` tokens; warm `todo`; return warm s."""
    session = requests.Session()
    session.put(f"{url}/{database}", timeout=30).raise_for_status()
    session.put(
        f"{url}/{database}/_design/{DESIGN}",
        data=json.dumps(monitor_design()),
        headers=JSON_HEADERS,
        timeout=60,
    ).raise_for_status()
    for first in range(0, tasks, batch):
        docs = [
            {
                "_id": f"token_{i:08d}",
                "type": "token",
                "lock": 0,
                "done": 0,
                "hostname": "",
                "scrub_count": 0,
                "input": {"album": i},
                "output": {},
                "uploads": {},
                "error": [],
            }
            for i in range(first, min(tasks, first + batch))
        ]
        session.post(
            f"{url}/{database}/_bulk_docs",
            data=json.dumps({"docs": docs}),
            headers=JSON_HEADERS,
            timeout=300,
        ).raise_for_status()
    started = time.perf_counter()
    session.get(
        f"{url}/{database}/_design/{DESIGN}/_view/todo", params={"limit": "0"}, timeout=3600
    ).raise_for_status()
    return time.perf_counter() - started


@dataclasses.dataclass
class PicasRun:
    """What the clients saw: every token each one locked, conflicts, give-ups, latencies."""

    claimed: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    conflicts: int = 0
    gave_up: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    out_of_time: bool = False

    @property
    def unique(self) -> int:
        return len(set(self.claimed))

    @property
    def doubles(self) -> int:
        return sum(n - 1 for n in collections.Counter(self.claimed).values() if n > 1)

    @property
    def rate(self) -> float:
        return self.unique / self.seconds if self.seconds else 0.0


class _Client:
    """One PiCaS pilot: TaskViewIterator over `Monitor/todo` until the view is empty."""

    def __init__(self, url: str, database: str, name: str, run: PicasRun, lock: threading.Lock):
        self.base = f"{url}/{database}"
        self.name, self.run, self.lock = name, run, lock
        self.session = requests.Session()
        self.rng = random.Random(name)

    def claim_task(self) -> str | None:
        """_claim_task: None when `todo` is empty (PiCaS's IndexError ends the iterator)."""
        for _ in range(ALLOWED_FAILURES):
            rows = self.session.get(
                f"{self.base}/_design/{DESIGN}/_view/todo",
                params={"limit": str(WINDOW)},
                timeout=600,
            ).json()["rows"]
            if not rows:
                return None
            doc_id = self.rng.choice(rows)["id"]
            doc = self.session.get(f"{self.base}/{doc_id}", timeout=600).json()
            doc["lock"] = int(time.time())  # Task.lock(): seconds(), and the hostname
            doc["hostname"] = self.name
            response = self.session.put(
                f"{self.base}/{doc_id}", data=json.dumps(doc), headers=JSON_HEADERS, timeout=600
            )
            if response.status_code in (201, 202):
                return doc_id
            if response.status_code != 409:
                response.raise_for_status()
            with self.lock:
                self.run.conflicts += 1
        raise OSError("Unable to claim task.")  # EnvironmentError in PiCaS

    def loop(self, start: threading.Barrier, deadline: float) -> None:
        start.wait()
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                doc_id = self.claim_task()
            except OSError:
                with self.lock:
                    self.run.gave_up += 1
                continue
            except (requests.RequestException, ValueError) as exc:
                with self.lock:
                    self.run.errors.append(f"{type(exc).__name__}: {exc}")
                return
            if doc_id is None:
                return
            elapsed = time.perf_counter() - began
            with self.lock:
                self.run.claimed.append(doc_id)
                self.run.latencies.append(elapsed)
        with self.lock:
            self.run.out_of_time = True


def run_clients(url: str, database: str, *, clients: int, budget: float) -> PicasRun:
    """Start `clients` pilots at once until `todo` is empty or `budget` seconds passed."""
    run, lock = PicasRun(), threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = time.monotonic() + budget
    threads = [
        threading.Thread(
            target=_Client(url, database, f"pilot-{n:02d}", run, lock).loop,
            args=(start, deadline),
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def measure(url: str, tasks: int, *, clients: int, budget: float) -> tuple[PicasRun, float]:
    """A whole PiCaS run in a scratch database on this server: (its run, todo warm s)."""
    database = f"bench_picas_{random.randrange(16**8):08x}"
    try:
        warm = create_queue(url, database, tasks)
        return run_clients(url, database, clients=clients, budget=budget), warm
    finally:
        drop_database(url, database)


def describe(run: PicasRun, tasks: int) -> str:
    return (
        f"{run.rate:,.0f} tokens/s ({run.unique:,} of {tasks:,} claimed in {run.seconds:.1f} s"
        f"{', stopped by the time budget' if run.out_of_time else ''}); double claims "
        f"{run.doubles}, conflicts {run.conflicts:,}, give-ups {run.gave_up}, errors "
        f"{len(run.errors)}; per claim {format_latencies(percentiles(run.latencies))}"
    )


def run(quick: bool = False) -> dict[str, Any]:
    """Standalone: `python -m bench.picas [--quick]` (the lease bench runs it as its peer)."""
    mode = "quick" if quick else "full"
    tasks = TASKS[mode]
    say(NAME, f"{tasks:,} tokens, {CLIENTS} clients; load average {load_average():.1f}")
    with scratch_server(NAME) as (url, _work):
        picas, warm = measure(url, tasks, clients=CLIENTS, budget=TIME_BUDGET[mode])
    say(NAME, f"todo index warm in {warm:.1f} s; {describe(picas, tasks)}")
    say(NAME, f"no double claims: {verdict(picas.doubles == 0)} (PiCaS does not promise it)")
    figures = {
        "passed": None,  # a peer, not a target
        "tasks": tasks,
        "clients": CLIENTS,
        "claimed_per_s": picas.rate,
        "claimed": picas.unique,
        "double_claims": picas.doubles,
        "conflicts": picas.conflicts,
        "gave_up": picas.gave_up,
        "seconds": picas.seconds,
        "out_of_time": picas.out_of_time,
        "latency_s": percentiles(picas.latencies),
        "errors": picas.errors[:20],
    }
    write_results(NAME, figures, quick=quick)
    return figures


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv[1:])
