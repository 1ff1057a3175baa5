"""`distleech ingest scan DIR…`: walk ingest volumes and ask the coordinator what landed there.

Each top-level directory and each loose file of a volume is one listing
(relative paths and sizes) sent to `POST /api/ingest`; the coordinator decides
and records. With `--verify`, the scanner first asks which torrents match
(a dry run), checks the data against each one's piece hashes (the .torrent
comes from `GET /api/torrents/<info hash>/file`), and sends the listing again
with the results, so verified, failed and unverifiable data are all recorded.

It talks to the coordinator over HTTP only, so it runs wherever the volume is
mounted: `--server` (default http://127.0.0.1:5000, or $DISTLEECH_SERVER) and
a worker token from `--token` or $DISTLEECH_TOKEN.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import requests

from app.torrents import parse_torrent_file
from app.verify import NOT_VERIFIABLE, layout_for, verify_pieces

DEFAULT_SERVER = "http://127.0.0.1:5000"
TIMEOUT_SECONDS = 300
# Files a BitTorrent client is still writing: such an entry is left for a later scan.
PARTIAL_SUFFIXES = (".part", ".!qb", ".!ut", ".incomplete")
ARIA2_CONTROL = ".aria2"


@dataclasses.dataclass
class Entry:
    """One listing to send: a top-level directory or a loose file of a volume."""

    path: Path
    kind: str
    files: list[tuple[str, int]]
    skipped: str | None = None

    def listing(self, **extra: Any) -> dict[str, Any]:
        files = [{"path": rel, "size": size} for rel, size in self.files]
        return {"path": str(self.path), "kind": self.kind, "files": files, **extra}


def _list_directory(root: Path) -> tuple[list[tuple[str, int]], str | None]:
    """Every regular file under root (relative posix path, size); or why to skip it."""
    files = []
    for directory, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(directory, name)
            if name.lower().endswith(PARTIAL_SUFFIXES):
                return [], f"still downloading ({path.relative_to(root)})"
            try:
                if not path.is_file():  # sockets, broken links
                    continue
                files.append((path.relative_to(root).as_posix(), path.stat().st_size))
            except OSError:
                continue
    return sorted(files), None if files else "no files"


def iter_entries(volume: Path) -> Iterator[Entry]:
    """The volume's top-level directories and loose files, in name order.

    Hidden entries are not downloads. aria2 keeps `<name>.aria2` beside a
    download until it completes, so such an entry is skipped for now.
    """
    names = sorted(os.listdir(volume))
    in_progress = {n[: -len(ARIA2_CONTROL)] for n in names if n.endswith(ARIA2_CONTROL)}
    for name in names:
        path = Path(os.path.abspath(volume / name))
        if name.startswith(".") or name.endswith(ARIA2_CONTROL):
            continue
        if not _is_utf8(name):
            yield Entry(path, "directory", [], skipped="the name is not UTF-8")
        elif name in in_progress:
            yield Entry(path, "directory", [], skipped="still downloading (aria2)")
        elif path.is_dir() and not path.is_symlink():
            files, skipped = _list_directory(path)
            if any(not _is_utf8(rel) for rel, _ in files):
                files, skipped = [], "a file name is not UTF-8"
            yield Entry(path, "directory", files, skipped)
        elif path.is_file():
            yield Entry(path, "file", [(name, path.stat().st_size)])


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir keeps undecodable bytes as surrogates
        return False
    return True


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
        self.code = code


def _json_or_raise(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": "http_error", "reason": response.text[:200]}
    if response.status_code >= 400:
        raise ApiCallError(response.status_code, str(body.get("error")), str(body.get("reason")))
    return dict(body)


class Scanner:
    """Sends each entry's listing, verifying matches first when asked."""

    def __init__(self, coordinator: Coordinator, *, verify: bool, dry_run: bool) -> None:
        self.coordinator = coordinator
        self.verify, self.dry_run = verify, dry_run
        self._verify_lock = threading.Lock()  # one verification at a time: one disk, one bar

    def scan(self, entry: Entry) -> dict[str, Any]:
        """The coordinator's report on one entry (a dry run first when verifying)."""
        report = self.coordinator.ingest(entry.listing(dry_run=self.verify or self.dry_run))
        if not self.verify or not report["matched"]:
            return report
        verified = {m["info_hash"]: self._verify(entry, m) for m in report["matched"]}
        return self.coordinator.ingest(entry.listing(verified=verified, dry_run=self.dry_run))

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
    "--jobs", type=click.IntRange(1, 64), default=4, show_default=True, help="Listings at once."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON report per line.")
def scan(
    volumes: tuple[Path, ...],
    server: str,
    token: str | None,
    verify: bool,
    dry_run: bool,
    jobs: int,
    as_json: bool,
) -> None:
    """Send each top-level directory and loose file of the VOLUMES as a listing.

    Exit status 1 when the coordinator refused or failed any listing.
    """
    scanner = Scanner(Coordinator(server, token), verify=verify, dry_run=dry_run)
    counts: Counter[str] = Counter()
    entries = (entry for volume in volumes for entry in iter_entries(volume))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for entry, outcome in pool.map(lambda e: (e, _scan_one(scanner, e)), entries):
            counts[_echo(entry, outcome, as_json)] += 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    click.echo(f"{sum(counts.values())} entries: {summary or 'none'}", err=True)
    if counts["error"]:
        sys.exit(1)


def _scan_one(scanner: Scanner, entry: Entry) -> dict[str, Any] | Exception | None:
    """The report on one entry, the error it ran into, or None when it was skipped."""
    if entry.skipped:
        return None
    try:
        return scanner.scan(entry)
    except requests.ConnectionError as exc:
        raise click.ClickException(f"cannot reach {scanner.coordinator.server}: {exc}") from None
    except (ApiCallError, requests.RequestException, ValueError) as exc:
        return exc


def _echo(entry: Entry, outcome: dict[str, Any] | Exception | None, as_json: bool) -> str:
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
