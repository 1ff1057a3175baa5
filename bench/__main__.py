"""`python -m bench [import|lease|rebuild|replicate|sites|stats|…] [--quick]`.

Each prints its figures as ratios against a baseline measured in the same run.
Exit status 1 when a target is missed or a benchmark breaks, else 0.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import (
    events,
    import_csv,
    lease,
    match,
    rebuild,
    replicate,
    sites_sim,
    stats,
    tracker,
    verify,
)
from bench.harness import quick_from_env

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "import": import_csv.run,
    "lease": lease.run,
    "rebuild": rebuild.run,
    "replicate": replicate.run,
    "sites": sites_sim.run,
    "stats": stats.run,
    "match": match.run,
    "verify": verify.run,
    "tracker": tracker.run,
    "events": events.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for a smoke run (also BENCH_QUICK=1)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    quick = args.quick or quick_from_env()
    outcomes: dict[str, str] = {}
    started = time.perf_counter()
    for name in args.names or list(BENCHMARKS):
        began = time.perf_counter()
        try:
            passed = BENCHMARKS[name](quick).get("passed")
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            outcomes[name] = "ERROR"
        else:
            outcomes[name] = "PASS" if passed is True else "FAIL" if passed is False else "SKIPPED"
        print(f"{name}: done in {time.perf_counter() - began:.0f} s\n", flush=True)
    summary = ", ".join(f"{name} {outcome}" for name, outcome in outcomes.items())
    print(f"bench: {summary} ({time.perf_counter() - started:.0f} s{', quick' if quick else ''})")
    return 1 if any(o in ("FAIL", "ERROR") for o in outcomes.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
