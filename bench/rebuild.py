"""rebuild: `distleech rebuild` of the read model from the log ÷ raw _all_docs paging.

An inventory goes in through `distleech import-csv`, workers lease part of it
through `GET /metadata/100` and report some albums as not found, then the real
command rebuilds every projection from the events in a subprocess:

1. over the stored read model (what an operator runs to check and repair:
   it must find nothing differing);
2. when the log has its own database (`<db>_events`), from nothing: the read
   model database is deleted and rebuilt, then `rebuild --check` must agree.

Its speed is facts folded per second ÷ the docs/s of paging the same number of
plain documents through `_all_docs?include_docs=true` in pages of 1,000 on the
same server: a rebuild must at least read every fact once. One event document
may record a command over many aggregates, so both counts are printed: the
per-aggregate changes (the rebuild's own count) and the event documents in the
log. The command's wall time includes its start-up (about a second). There is
no speed target in the issue; the bench fails when a rebuild differs.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    JSON_HEADERS,
    ChildRun,
    app_env,
    distleech_command,
    drop_database,
    events_database,
    fill_plain_docs,
    import_inventory,
    issue_worker_token,
    load_average,
    run_cli,
    run_measured,
    say,
    scratch_server,
    serving,
    user_doc_count,
    verdict,
    write_results,
)

NAME = "rebuild"
DATABASE = "bench_rebuild"
SIZES = {"full": (50_000, 10_000), "quick": (3_000, 1_000)}  # (albums, leased)
ROWS = 100


def raw_all_docs_paging_rate(url: str, docs: int, *, page: int = 1000) -> float:
    """Docs/s reading `docs` plain documents through _all_docs?include_docs in pages.

    Pages continue from the last id with skip=1 (startkey_docid is not honoured
    by the bundled server; see COUCHDB-COMPAT.md).
    """
    name = f"bench_rawpage_{uuid.uuid4().hex[:10]}"
    try:
        fill_plain_docs(url, name, docs)
        session = requests.Session()
        params: dict[str, str] = {"include_docs": "true", "limit": str(page)}
        seen = 0
        started = time.perf_counter()
        while True:
            rows = session.get(f"{url}/{name}/_all_docs", params=params, timeout=300).json()["rows"]
            seen += len(rows)
            if len(rows) < page:
                break
            params.update(startkey=json.dumps(rows[-1]["id"]), skip="1")
        elapsed = time.perf_counter() - started
    finally:
        drop_database(url, name)
    if seen != docs:
        raise RuntimeError(f"raw _all_docs paging saw {seen} of {docs} docs")
    return docs / elapsed


def _lease_and_submit(base: str, token: str, leased: int) -> int:
    """Lease `leased` albums; report every other batch as not found. Return albums leased."""
    session = requests.Session()
    session.headers["X-AUTHENTICATION"] = token
    got = 0
    for call in range(0, leased, ROWS):
        rows = min(ROWS, leased - call)
        response = session.get(f"{base}/metadata/{rows}", timeout=300)
        response.raise_for_status()
        albums = response.json()["albums"]
        got += len(albums)
        if albums and (call // ROWS) % 2 == 0:
            body: dict[str, list[Any]] = {str(album["id"]): [] for album in albums}
            session.post(
                f"{base}/metadata/submit", data=json.dumps(body), headers=JSON_HEADERS, timeout=300
            ).raise_for_status()
    return got


def _count_event_documents(url: str) -> int:
    """Event documents in the log: its own database, or the `ev:` ids of a shared one."""
    log = events_database(url, DATABASE)
    if log:
        return user_doc_count(url, log)
    session, count = requests.Session(), 0
    params = {"startkey": json.dumps("ev:"), "endkey": json.dumps("ev:\ufff0"), "limit": "10000"}
    while True:
        rows = session.get(f"{url}/{DATABASE}/_all_docs", params=params, timeout=300).json()["rows"]
        count += len(rows)
        if len(rows) < 10000:
            return count
        params.update(startkey=json.dumps(rows[-1]["id"]), skip="1")


def _report(run: ChildRun, as_json: bool) -> dict[str, Any]:
    """The rebuild's counts from its --json line, else from its text ("N events, ...")."""
    if as_json:
        for line in run.output.splitlines():
            if line.startswith("{"):
                return dict(json.loads(line))
    found: dict[str, Any] = {}
    for number, words in re.findall(r"(\d[\d,]*) ([a-z_]+(?: [a-z_]+)?)", run.output):
        found[words.replace(" ", "_")] = int(number.replace(",", ""))
    return found


def _rebuild(url: str, work: Path, label: str, *, check: bool = False) -> tuple[ChildRun, dict]:
    help_text = run_cli(url, DATABASE, work, "rebuild", "--help")
    as_json = "--json" in help_text
    args = ["rebuild", *(["--check"] if check else []), *(["--json"] if as_json else [])]
    run = run_measured(
        distleech_command(*args), app_env(url, DATABASE, work), work / f"rebuild-{label}.log"
    )
    if run.returncode not in (0, 1):  # 1: --check found differences, reported below
        raise RuntimeError(f"distleech rebuild exited with {run.returncode}:\n{run.output[-2000:]}")
    return run, _report(run, as_json)


def _differing(report: dict[str, Any]) -> int:
    value = report.get("differing", 0)
    return len(value) if isinstance(value, list) else int(value)


def _changes(report: dict[str, Any]) -> int:
    """Per-aggregate changes folded: `events` in the report (or `changes`)."""
    return int(report.get("events") or report.get("changes") or 0)


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    albums, leased = SIZES[mode]
    say(NAME, f"{albums:,} albums, {leased:,} leased; load average {load_average():.1f} at start")
    with scratch_server(NAME) as (url, work):
        import_inventory(url, DATABASE, work, albums)
        token = issue_worker_token(url, DATABASE, work)
        with serving(url, DATABASE, work) as base:
            got = _lease_and_submit(base, token, leased)
        documents = _count_event_documents(url)
        stored, stored_report = _rebuild(url, work, "stored")
        changes = _changes(stored_report)
        raw = raw_all_docs_paging_rate(url, max(changes, documents, 1))
        fresh = fresh_report = check_report = None
        if events_database(url, DATABASE):
            drop_database(url, DATABASE)
            fresh, fresh_report = _rebuild(url, work, "fresh")
            _, check_report = _rebuild(url, work, "check", check=True)

    rate = changes / stored.seconds
    docs_rate = documents / stored.seconds
    ok = _differing(stored_report) == 0 and changes > 0 and got == leased
    say(
        NAME,
        f"over the stored read model: {changes:,} changes in {documents:,} event documents "
        f"in {stored.seconds:.1f} s = {rate:,.0f} changes/s = {rate / raw:.2f} x raw "
        f"_all_docs paging ({raw:,.0f} docs/s); {docs_rate:,.0f} event documents/s; "
        f"differing {_differing(stored_report)} (must be 0): {verdict(ok)}",
    )
    say(NAME, f"  report: {stored_report}; importer leased {got:,} of {leased:,}")
    figures: dict[str, Any] = {
        "albums": albums,
        "leased": got,
        "event_documents": documents,
        "changes": changes,
        "raw_all_docs_per_s": raw,
        "stored_seconds": stored.seconds,
        "stored_changes_per_s": rate,
        "stored_ratio": rate / raw,
        "stored_event_docs_per_s": docs_rate,
        "stored_docs_ratio": docs_rate / raw,
        "stored_report": stored_report,
    }
    if fresh is None or fresh_report is None or check_report is None:
        say(NAME, "  from nothing: skipped (the log shares the read model's database)")
    else:
        fresh_rate = _changes(fresh_report) / fresh.seconds
        fresh_ok = _differing(check_report) == 0 and _changes(fresh_report) == changes
        ok = ok and fresh_ok
        say(
            NAME,
            f"from nothing (read model deleted): {fresh.seconds:.1f} s = {fresh_rate:,.0f} "
            f"changes/s = {fresh_rate / raw:.2f} x raw; then --check differing "
            f"{_differing(check_report)} (must be 0): {verdict(fresh_ok)}",
        )
        figures.update(
            fresh_seconds=fresh.seconds,
            fresh_changes_per_s=fresh_rate,
            fresh_ratio=fresh_rate / raw,
            fresh_report=fresh_report,
            check_report=check_report,
        )
    figures["passed"] = ok
    write_results(NAME, figures, quick=quick)
    return figures
