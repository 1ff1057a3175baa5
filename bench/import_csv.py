"""import: `distleech import-csv` against raw _bulk_docs, documents per row, peak RSS.

The importer runs as the real command in a subprocess. Its speed is rows/s
divided by raw _bulk_docs docs/s measured on the same server right before; an
import that writes D documents per row can at best reach 1/D of that, and the
target is 80 % of that ceiling. Its peak RSS must not grow with the file: a
small and a large file go into separate databases and their peaks are compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import (
    app_env,
    distleech_command,
    load_average,
    raw_bulk_docs_rate,
    run_measured,
    say,
    scratch_server,
    user_doc_count,
    validating_design,
    verdict,
    write_inventory_csv,
    write_results,
)

NAME = "import"
SIZES = {"full": (20_000, 200_000), "quick": (2_000, 20_000)}
RAW_DOCS = {"full": 30_000, "quick": 10_000}
TARGET_OF_CEILING = 0.8
RSS_FLAT = 1.15  # the large file's peak may be at most 15 % above the small file's


def _import_file(url: str, work: Path, csv_path: Path, database: str, rows: int) -> dict[str, Any]:
    """Import one CSV with the real command into its own database; return its figures."""
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
    if summary["added"] != rows or summary["rejected"]:
        raise RuntimeError(
            f"expected {rows} rows added, none rejected; the importer said {summary}"
        )
    docs = user_doc_count(url, database)
    return {
        "rows": rows,
        "seconds": round(run.seconds, 3),
        "rows_per_s": rows / run.seconds,
        "importer_cpu_seconds": round(run.cpu_seconds, 3),
        "peak_rss_bytes": run.max_rss_bytes,
        "docs": docs,
        "docs_per_row": docs / rows,
    }


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    small, large = SIZES[mode]
    say(NAME, f"{small:,} and {large:,} rows; load average {load_average():.1f} at start")
    with scratch_server(NAME) as (url, work):
        small_csv = write_inventory_csv(work / f"inventory-{small}.csv", small)
        large_csv = write_inventory_csv(work / f"inventory-{large}.csv", large)
        first = _import_file(url, work, small_csv, "bench_import_small", small)
        raw_validated = raw_bulk_docs_rate(url, RAW_DOCS[mode], design=validating_design())
        raw = raw_bulk_docs_rate(url, RAW_DOCS[mode])
        second = _import_file(url, work, large_csv, "bench_import_large", large)
        raw_after = raw_bulk_docs_rate(url, RAW_DOCS[mode])

    ratio = second["rows_per_s"] / raw
    ceiling = 1 / second["docs_per_row"]
    target = TARGET_OF_CEILING * ceiling
    speed_ok = ratio >= target
    growth = second["peak_rss_bytes"] / first["peak_rss_bytes"]
    rss_ok = growth <= RSS_FLAT
    mib = 1024 * 1024
    cpu = second["importer_cpu_seconds"]
    say(
        NAME,
        f"{second['rows_per_s']:,.0f} rows/s = {ratio:.2f} x raw _bulk_docs "
        f"({raw:,.0f} docs/s); {second['docs_per_row']:.2f} docs/row; ceiling {ceiling:.2f}; "
        f"target >= {target:.2f}: {verdict(speed_ok)}",
    )
    say(
        NAME,
        f"peak RSS {first['peak_rss_bytes'] / mib:.1f} MiB at {small:,} rows, "
        f"{second['peak_rss_bytes'] / mib:.1f} MiB at {large:,} rows (x{growth:.2f}); "
        f"target flat (<= x{RSS_FLAT:.2f}): {verdict(rss_ok)}",
    )
    say(
        NAME,
        f"  {large:,} rows in {second['seconds']:.1f} s, importer CPU {cpu:.1f} s "
        f"({cpu / second['seconds']:.0%} of wall time); raw _bulk_docs after: "
        f"{raw_after:,.0f} docs/s ({raw_after / raw - 1:+.0%} drift)",
    )
    say(
        NAME,
        f"  against raw _bulk_docs into a database with the app's validate_doc_update "
        f"({raw_validated:,.0f} docs/s = {raw_validated / raw:.2f} x raw): "
        f"{second['rows_per_s'] / raw_validated:.2f}, of a ceiling of {ceiling:.2f}",
    )
    figures = {
        "passed": speed_ok and rss_ok,
        "raw_bulk_docs_per_s": raw,
        "raw_bulk_docs_per_s_after": raw_after,
        "raw_bulk_docs_validated_per_s": raw_validated,
        "ratio": ratio,
        "ratio_to_validated": second["rows_per_s"] / raw_validated,
        "ceiling": ceiling,
        "target": target,
        "speed_passed": speed_ok,
        "rss_growth": growth,
        "rss_flat_limit": RSS_FLAT,
        "rss_passed": rss_ok,
        "small": first,
        "large": second,
    }
    write_results(NAME, figures, quick=quick)
    return figures
