"""`distleech ingest scan DIR…`: walk ingest volumes and ask the coordinator what landed there.

Each top-level directory and each loose file of a volume is one listing
(relative paths and sizes). Listings go to `POST /api/ingest` in batches
(`--batch` listings per request, `--jobs` requests in flight): the
coordinator matches and records a batch together, which costs far less than
the same listings one by one. When the coordinator refuses a whole batch as
malformed (or does not know batches), each of its listings is sent alone, so
that only the bad one is reported as an error. With `--verify`, the scanner
first asks which torrents match (a dry run), checks the data against each
one's piece hashes (the .torrent comes from `GET /api/torrents/<info
hash>/file`), and sends the matched listings again with the results, so
verified, failed and unverifiable data are all recorded.

It talks to the coordinator over HTTP only, so it runs wherever the volume is
mounted: `--server` (default http://127.0.0.1:5000, or $DISTLEECH_SERVER) and
a worker token from `--token` or $DISTLEECH_TOKEN.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import requests

from metainfo.torrent import parse_torrent_file
from worker.verify import NOT_VERIFIABLE, layout_for, verify_pieces
from worker.volume import Entry, iter_entries

DEFAULT_SERVER = "http://127.0.0.1:5000"
TIMEOUT_SECONDS = 300
DEFAULT_BATCH = 25
# The most listings one batch may carry: the coordinator's limit
# (app.ingest.parse.MAX_BATCH_LISTINGS; tests/test_layout.py checks they agree).
MAX_BATCH_LISTINGS = 100
# Files per request: a batch closes early at this many, so that request bodies stay
# small (a listing with more goes alone); the coordinator allows up to 100,000.
BATCH_FILES = 20_000
# A batch refused with these is malformed (or the coordinator predates batches):
# each listing is then sent alone.
REFUSED_AS_A_WHOLE = (400, 413)


class Coordinator:
    """The coordinator's HTTP API, with one keep-alive session per thread."""

    def __init__(self, server: str, token: str | None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"X-AUTHENTICATION": token} if token else {}
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            self._local.session.headers.update(self.headers)
        session: requests.Session = self._local.session
        return session

    def ingest(self, listing: dict[str, Any]) -> dict[str, Any]:
        response = self.session.post(
            f"{self.server}/api/ingest", json=listing, timeout=TIMEOUT_SECONDS
        )
        return _json_or_raise(response)

    def ingest_batch(self, listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The coordinator's reports on a batch of listings, in order."""
        response = self.session.post(
            f"{self.server}/api/ingest", json={"listings": listings}, timeout=TIMEOUT_SECONDS
        )
        reports = _json_or_raise(response).get("reports")
        if not isinstance(reports, list) or len(reports) != len(listings):
            raise ValueError("the coordinator's answer to a batch has no report per listing")
        return [dict(report) for report in reports]

    def torrent_file(self, info_hash: str) -> bytes:
        response = self.session.get(
            f"{self.server}/api/torrents/{info_hash}/file", timeout=TIMEOUT_SECONDS
        )
        if response.status_code >= 400:
            _json_or_raise(response)
        return response.content


class ApiCallError(Exception):
    """The coordinator refused a request; carries its stable error code."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status, self.code = status, code


def _json_or_raise(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": "http_error", "reason": response.text[:200]}
    if response.status_code >= 400:
        raise ApiCallError(response.status_code, str(body.get("error")), str(body.get("reason")))
    return dict(body)


Outcome = dict[str, Any] | Exception


def _attempt(call: Callable[..., Any], *args: Any) -> Any:
    """The call's result, or the error that makes one entry fail (not the whole scan)."""
    try:
        return call(*args)
    except requests.ConnectionError:
        raise  # the coordinator is unreachable: nothing else will get through either
    except (ApiCallError, requests.RequestException, ValueError) as exc:
        return exc


class Scanner:
    """Sends entries' listings in batches, verifying matches first when asked."""

    def __init__(self, coordinator: Coordinator, *, verify: bool, dry_run: bool) -> None:
        self.coordinator = coordinator
        self.verify, self.dry_run = verify, dry_run
        self._verify_lock = threading.Lock()  # one verification at a time: one disk, one bar

    def scan(self, entries: list[Entry]) -> list[Outcome]:
        """The coordinator's report on each entry, or the error it ran into, in order.

        When verifying, the first batch is a dry run; the matched entries are
        verified and sent again, as a second batch, with the results.
        """
        outcomes = self._send([e.listing(dry_run=self.verify or self.dry_run) for e in entries])
        if not self.verify:
            return outcomes
        again: list[tuple[int, dict[str, Any]]] = []
        for i, (entry, outcome) in enumerate(zip(entries, outcomes, strict=True)):
            if isinstance(outcome, dict) and outcome["matched"]:
                verified = _attempt(self._verify_all, entry, outcome)
                if isinstance(verified, Exception):
                    outcomes[i] = verified
                else:
                    again.append((i, entries[i].listing(verified=verified, dry_run=self.dry_run)))
        if again:
            for (i, _), outcome in zip(again, self._send([li for _, li in again]), strict=True):
                outcomes[i] = outcome
        return outcomes

    def _send(self, listings: list[dict[str, Any]]) -> list[Outcome]:
        """Send listings as one batch; when it is refused as a whole, each alone."""
        if len(listings) == 1:
            return [_attempt(self.coordinator.ingest, listings[0])]
        reports = _attempt(self.coordinator.ingest_batch, listings)
        if not isinstance(reports, Exception):
            return list(reports)
        if not (isinstance(reports, ApiCallError) and reports.status in REFUSED_AS_A_WHOLE):
            return [reports] * len(listings)
        return [_attempt(self.coordinator.ingest, li) for li in listings]

    def _verify_all(self, entry: Entry, report: dict[str, Any]) -> dict[str, Any]:
        return {m["info_hash"]: self._verify(entry, m) for m in report["matched"]}

    def _verify(self, entry: Entry, match: dict[str, Any]) -> dict[str, Any]:
        if not match["has_torrent_file"]:
            return {"status": NOT_VERIFIABLE, "reason": "no .torrent file is known"}
        parsed = parse_torrent_file(self.coordinator.torrent_file(match["info_hash"]))
        layout = layout_for(parsed, entry.path, entry.kind, [rel for rel, _ in entry.files])
        if layout is None:
            return {"status": NOT_VERIFIABLE, "reason": "a file of the torrent is not here"}
        with self._verify_lock, _progress_bar(parsed.name, sum(e.size for e in layout)) as bar:
            result = verify_pieces(layout, parsed.piece_length, parsed.pieces, progress=bar.update)
        return result.as_verification()


def _progress_bar(label: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"verify {label[:40]}",
        leave=False,
        disable=not sys.stderr.isatty(),
    )


def describe(entry: Entry, report: dict[str, Any]) -> str:
    """One line for a human: what the coordinator decided about an entry."""
    if report["outcome"] == "no_match":
        line = f"no match  {entry.path}: {report['reason']}"
        for rejected in report["rejected"][:3]:
            line += f"\n          {rejected['info_hash'][:12]} {rejected['name']}: "
            line += "; ".join(_reason_text(r) for r in rejected["reasons"][:3])
        return line
    label = "matched " if report["outcome"] == "matched" else "several "
    parts = []
    for match in report["matched"]:
        tasks = ", ".join(f"{t['site']} #{t['torrentId']} {t['status']}" for t in match["tasks"])
        verified = (match.get("verified") or {}).get("status")
        parts.append(
            f"{match['info_hash'][:12]} {match['title'] or match['name']}"
            + (f" [{verified}]" if verified else "")
            + (f" ({tasks})" if tasks else "")
        )
    extra = report["extra_files"]["count"]
    line = f"{label}  {entry.path}: " + "; ".join(parts) + (f"; {extra} extra" if extra else "")
    for rejected in report["rejected"]:  # data with the right names and sizes, but not the data
        if rejected["reasons"][:1] and rejected["reasons"][0]["problem"] == "verification_failed":
            line += f"\n          {rejected['info_hash'][:12]} {rejected['name']}: "
            line += _reason_text(rejected["reasons"][0])
    return line


def _reason_text(reason: dict[str, Any]) -> str:
    problem = reason["problem"]
    if problem == "wrong_size":
        return f"{reason['file']} is {reason['found']} bytes, not {reason['expected']}"
    if problem == "missing":
        return f"{reason['file']} is missing"
    if problem == "verification_failed":
        return f"failed at piece {reason.get('piece')}"
    return str(problem).replace("_", " ")


@click.group()
def ingest() -> None:
    """Match what landed on the ingest volume to the torrents the coordinator expects."""


@ingest.command()
@click.argument(
    "volumes",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--server",
    envvar="DISTLEECH_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The coordinator's base URL ($DISTLEECH_SERVER).",
)
@click.option("--token", envvar="DISTLEECH_TOKEN", help="A worker token ($DISTLEECH_TOKEN).")
@click.option("--verify", is_flag=True, help="Check matches against their piece hashes.")
@click.option("--dry-run", is_flag=True, help="Report what would be recorded; record nothing.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests (batches) in flight at once.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH_LISTINGS),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Listings per request (fewer when they hold many files).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON report per line.")
def scan(
    volumes: tuple[Path, ...],
    server: str,
    token: str | None,
    verify: bool,
    dry_run: bool,
    jobs: int,
    batch: int,
    as_json: bool,
) -> None:
    """Send each top-level directory and loose file of the VOLUMES as a listing.

    Exit status 1 when the coordinator refused or failed any listing.
    """
    scanner = Scanner(Coordinator(server, token), verify=verify, dry_run=dry_run)
    counts: Counter[str] = Counter()
    entries = (entry for volume in volumes for entry in iter_entries(volume))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for group, outcomes in pool.map(
            lambda g: (g, _scan_batch(scanner, g)), batches(entries, batch)
        ):
            for entry, outcome in zip(group, outcomes, strict=True):
                counts[_echo(entry, outcome, as_json)] += 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    click.echo(f"{sum(counts.values())} entries: {summary or 'none'}", err=True)
    if counts["error"]:
        sys.exit(1)


def batches(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    """Group entries in order: `size` listings to send (skipped ones ride along), or fewer
    when they hold more than BATCH_FILES files."""
    group: list[Entry] = []
    listings = files = 0
    for entry in entries:
        full = listings == size or files + len(entry.files) > BATCH_FILES
        if not entry.skipped and listings and full:
            yield group
            group, listings, files = [], 0, 0
        group.append(entry)
        if not entry.skipped:
            listings, files = listings + 1, files + len(entry.files)
    if group:
        yield group


def _scan_batch(scanner: Scanner, group: list[Entry]) -> list[Outcome | None]:
    """Each entry's report, the error it ran into, or None when it was skipped."""
    sent = [entry for entry in group if not entry.skipped]
    try:
        reports = iter(scanner.scan(sent) if sent else [])
    except requests.ConnectionError as exc:
        raise click.ClickException(f"cannot reach {scanner.coordinator.server}: {exc}") from None
    return [None if entry.skipped else next(reports) for entry in group]


def _echo(entry: Entry, outcome: Outcome | None, as_json: bool) -> str:
    """Print one entry's outcome; return what it counts as in the summary."""
    record: dict[str, Any]
    if outcome is None:
        kind, record, line = "skipped", {"skipped": entry.skipped}, f"skipped   {entry.path}"
        line += f": {entry.skipped}"
    elif isinstance(outcome, Exception):
        kind, record, line = "error", {"error": str(outcome)}, f"error     {entry.path}: {outcome}"
    else:
        kind, record, line = outcome["outcome"], {"report": outcome}, describe(entry, outcome)
    click.echo(json.dumps({"path": str(entry.path), **record}) if as_json else line)
    return kind
