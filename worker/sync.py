"""`distleech worker sync`: lease a source's sync order, mirror it with gallery-dl, report.

The http_downloader's job, leased over HTTP instead of read from AMQP: for
each order the worker runs gallery-dl (worker/gallery.py) into
`<content root>/<content path>`, reports every file `downloaded` or
`skipped` with its size and sha256 (at most 1000 per request), then the
order `synchronised` (or `failed`, with a reason) with counts.

Remote deletions: the files the coordinator knows as present (`known_files`)
that the remote no longer lists are reported `missing_remotely`; with
`sync_remote_deletes` they are also removed here and reported `deleted`.
Both happen only after a run in which the listing and every download went
through: a failed or partial listing cannot tell "gone" from "not reached",
so it never deletes anything.

Resumption: a worker that dies mid-sync reports nothing more; the lease
expires and the order comes back. The next run skips what is complete on
disk and resumes the `.part` file gallery-dl left (HTTP Range). A worker
that lives renews its lease as it goes (worker/sync_report.py), so a long
sync is not handed to a second worker meanwhile.

What reaches the coordinator (worker/sync_report.py): a batch of files is
sent again after a transient failure and the order ends `failed` if it
cannot be sent at all; a refusal (4xx) ends the order `failed` with the
coordinator's reason and the worker goes on with the next order.

Paths: the content path is checked with the coordinator's own rule
(metainfo/paths.py) and must resolve strictly inside the content root; no
symlink below the content directory is followed (a known name that is one
is not ours: reported missing_remotely, never hashed or deleted).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click
import requests

from metainfo.paths import relative_path_problem
from worker.coordinator import Coordinator
from worker.gallery import (
    FileResult,
    UnsupportedSourceError,
    fetch_source,
    hash_file,
)
from worker.sync_report import Reporter, SyncReport, renewing

__all__ = ["Reporter", "SyncReport", "SyncWorker", "UnsafePathError", "content_directory", "sync"]

log = logging.getLogger(__name__)


class UnsafePathError(ValueError):
    """A content path or file name that would leave the content root."""


def content_directory(root: Path, content_path: Any) -> Path:
    """The resolved `root/content_path`, strictly inside the resolved root; else UnsafePathError.

    The content path must pass the coordinator's own rule first
    (metainfo/paths.py: relative, no empty, `.` or `..` segment, no
    backslash or control character). Then links are resolved: a content
    directory that is, or lies below, a symlink leading out of the root (or
    back to the root itself) is refused before gallery-dl writes anything or
    anything is deleted. The resolved path is returned, so every later check
    (gallery.relative_inside) compares real paths.
    """
    problem = relative_path_problem(content_path) if isinstance(content_path, str) else "is no text"
    if problem is not None:
        raise UnsafePathError(f"content path {content_path!r} {problem}")
    real_root = os.path.realpath(root)
    real = os.path.realpath(root.joinpath(*content_path.split("/")))
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePathError(f"content path {content_path!r} leads outside the content root")
    return Path(real)


class SyncWorker:
    """Leases one sync order at a time and mirrors it below content_root."""

    def __init__(self, coordinator: Coordinator, content_root: Path) -> None:
        self.coordinator = coordinator
        self.content_root = content_root

    def lease(self) -> dict[str, Any] | None:
        """GET /api/sources/next: an order, or None when nothing is due (204)."""
        statuses: list[int] = []

        def note_status(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            statuses.append(response.status_code)

        # the shared client's retries and error codes, plus the one status it hides
        body = self.coordinator.request("GET", "api/sources/next", hooks={"response": note_status})
        if statuses and statuses[-1] == 204:
            return None
        return dict(body)

    def run_batch(self) -> SyncReport:
        """Lease and run one order; an empty report when nothing is due."""
        order = self.lease()
        if order is None:
            return SyncReport()
        return self.sync(order)

    def sync(self, order: dict[str, Any]) -> SyncReport:
        """Mirror one order's source; report files, then the order's end."""
        report = SyncReport(leased=1)
        reporter = Reporter(self.coordinator, order, report)
        log.info("source %s: syncing %s", order["source_id"], order["url"])
        with renewing(reporter, order.get("lease_seconds")):
            try:
                content_dir = content_directory(self.content_root, order["content_path"])
                fetch = fetch_source(order["url"], content_dir, order.get("cookies"), reporter.add)
            except (UnsafePathError, UnsupportedSourceError) as exc:
                log.error("source %s: %s", order["source_id"], exc)
                reporter.finish("failed", str(exc))
                return report
            report.refused = len(fetch.refused)
            if not fetch.complete:
                reason = _failure_reason(fetch.status, fetch.refused, fetch.errors)
                reporter.finish("failed", reason)
                return report
            self.finish_complete(order, content_dir, fetch.seen, reporter)
        log.info("source %s: %s", order["source_id"], report.counts())
        return report

    def finish_complete(
        self, order: dict[str, Any], content_dir: Path, seen: set[str], reporter: Reporter
    ) -> None:
        """After a complete run: mirror deletions, then end the order."""
        unsafe = self.mirror_deletions(order, content_dir, seen, reporter)
        if unsafe:
            reporter.report.refused += len(unsafe)
            reporter.finish("failed", f"refused known files outside the content path: {unsafe}")
        else:
            reporter.finish("synchronised")

    def mirror_deletions(
        self, order: dict[str, Any], content_dir: Path, seen: set[str], reporter: Reporter
    ) -> list[str]:
        """Report known files the remote no longer lists; delete them if the order says so.

        Returns the known names that were refused because they are not plain
        relative paths (nothing is deleted for them, ever). A known name that
        is (or lies below) a symlink is not ours: it is reported
        missing_remotely without size or hash (the coordinator then records
        it as not present) and neither the link nor its target is deleted.
        """
        unsafe: list[str] = []
        for name in sorted(set(order.get("known_files") or [])):
            if not isinstance(name, str) or relative_path_problem(name) is not None:
                unsafe.append(name)  # `..`, an absolute name: never looked at
                continue
            if name in seen:
                continue
            local = content_dir.joinpath(*name.split("/"))
            if _through_symlink(content_dir, local):
                # not ours: never hashed or deleted, so no other file is touched under its name
                reporter.add(FileResult(name, "missing_remotely"))
                continue
            reporter.add(_describe(name, local, "missing_remotely"))
            if order.get("sync_remote_deletes") and local.is_file():
                deleted = _describe(name, local, "deleted")
                local.unlink()
                _remove_empty_parents(local.parent, content_dir)
                reporter.add(deleted)
        return unsafe


def _through_symlink(content_dir: Path, local: Path) -> bool:
    """True when `local` or a directory between it and content_dir is a symlink."""
    path = local
    while path != content_dir and content_dir in path.parents:
        if path.is_symlink():
            return True
        path = path.parent
    return False


def _describe(relative: str, local: Path, status: str) -> FileResult:
    """A result with the local copy's size and hash, or without when there is none."""
    if local.is_file() and not local.is_symlink():
        size, sha256 = hash_file(local)
        return FileResult(relative, status, size, sha256)
    return FileResult(relative, status)


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove directories a deletion left empty, up to (not including) the content dir."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _failure_reason(status: int, refused: list[str], errors: list[str]) -> str:
    parts = []
    if refused:
        parts.append(f"refused {len(refused)} path(s) outside the content directory: {refused}")
    if errors:
        parts.append("; ".join(errors[:5]))
    if status:
        parts.append(f"gallery-dl exit status {status}")
    return "; ".join(parts) + "; nothing deleted"


@click.command("sync")
@click.option(
    "--server",
    "--coordinator",
    "server",
    envvar="DISTLEECH_SERVER",
    default="http://127.0.0.1:5000",
    show_default=True,
    show_envvar=True,
    help="The distleech coordinator's URL.",
)
@click.option(
    "--content-root",
    envvar="DISTLEECH_CONTENT_ROOT",
    show_envvar=True,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where sources live; each order names a directory below it.",
)
@click.option("--once", is_flag=True, help="Run one order, then exit.")
@click.option("--forever", is_flag=True, help="Never exit; sleep when no sync is due.")
@click.option(
    "--idle-sleep",
    "--idle-seconds",
    "idle_sleep",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds to wait for work with --forever.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every source.")
def sync(
    server: str, content_root: Path, once: bool, forever: bool, idle_sleep: float, verbose: bool
) -> None:
    """Lease source sync orders, mirror each source with gallery-dl, report every file.

    The worker token comes from DISTLEECH_TOKEN. A source's files go to
    CONTENT_ROOT/<its content path>. By default orders are run until none is
    due; --once runs one, --forever waits --idle-sleep seconds when none is.
    """
    from worker.cli import _coordinator, _fatal_errors, _setup, _summarise, run_loop

    loop = _setup(verbose, once, forever, idle_sleep)
    content_root.mkdir(parents=True, exist_ok=True)
    worker = SyncWorker(_coordinator(server), Path(os.path.abspath(content_root)))
    with _fatal_errors():
        reports = run_loop(worker.run_batch, loop)
    _summarise(reports, "sources")
