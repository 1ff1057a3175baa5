"""`distleech worker metadata|download`: the reference workers' command line.

Secrets come from the environment, never from flags in shell history or
`ps`: DISTLEECH_TOKEN (a worker token for the coordinator, the variable
`distleech ingest scan` reads too; the server's URL is --server or
DISTLEECH_SERVER, as there), DISTLEECH_SITE_API_KEY,
DISTLEECH_SITE_SESSION, DISTLEECH_SITE_AUTHKEY, DISTLEECH_SITE_TORRENT_PASS
(the site). The BitTorrent client's RPC secret or password may be given
as a flag for a quick local test, but DISTLEECH_RPC_SECRET /
DISTLEECH_RPC_PASSWORD are the way to pass them.

Loop modes: by default a worker leases batch after batch and exits when a
lease comes back empty; --once runs one batch; --forever sleeps
--idle-sleep seconds whenever there is no work and never exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from worker.btclients import CLIENT_KINDS, BitTorrentClientError, make_client
from worker.coordinator import Coordinator, CoordinatorError
from worker.gazelle import (
    DEFAULT_RATE_REQUESTS,
    DEFAULT_RATE_WINDOW,
    DOWNLOAD_STYLES,
    GazelleAuthError,
    GazelleClient,
    SiteCredentials,
    shared_limiter,
    site_base_url,
)
from worker.sync import sync

log = logging.getLogger(__name__)

DEFAULT_RPC_URLS = {
    "aria2": "http://127.0.0.1:6800/jsonrpc",
    "transmission": "http://127.0.0.1:9091/transmission/rpc",
}


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    once: bool
    forever: bool
    idle_sleep: float


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags both workers share: server, site, batch, rate limit, loop mode."""
    options = [
        click.option(
            "--server",
            envvar="DISTLEECH_SERVER",
            default="http://127.0.0.1:5000",
            show_default=True,
            show_envvar=True,
            help="The distleech coordinator's URL.",
        ),
        click.option(
            "--site", required=True, help="The Gazelle site's URL, e.g. https://x.example/."
        ),
        click.option("--batch", type=click.IntRange(1, 100), help="Rows per lease."),
        click.option(
            "--rate-requests",
            type=click.IntRange(1),
            default=DEFAULT_RATE_REQUESTS,
            show_default=True,
            help="Site requests allowed per window.",
        ),
        click.option(
            "--rate-window",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_RATE_WINDOW,
            show_default=True,
            help="The site's rate limit window in seconds.",
        ),
        click.option("--once", is_flag=True, help="Run one batch, then exit."),
        click.option("--forever", is_flag=True, help="Never exit; sleep when there is no work."),
        click.option(
            "--idle-sleep",
            type=click.FloatRange(min=0),
            default=300.0,
            show_default=True,
            help="Seconds to wait for work with --forever.",
        ),
        click.option("-v", "--verbose", is_flag=True, help="Log every album and torrent."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def worker() -> None:
    """Reference workers: find albums on a Gazelle site, fetch their torrents."""


def _setup(verbose: bool, once: bool, forever: bool, idle_sleep: float) -> LoopOptions:
    if once and forever:
        raise click.UsageError("--once and --forever exclude each other.")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return LoopOptions(once=once, forever=forever, idle_sleep=idle_sleep)


def _coordinator(server: str) -> Coordinator:
    token = os.environ.get("DISTLEECH_TOKEN", "")
    if not token:
        raise click.UsageError("Set DISTLEECH_TOKEN to a worker token (distleech token add).")
    return Coordinator(server, token)


def _gazelle(site: str, rate_requests: int, rate_window: float, style: str) -> GazelleClient:
    try:
        base = site_base_url(site)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--site") from None
    limiter = shared_limiter(base, rate_requests, rate_window)
    return GazelleClient(base, SiteCredentials.from_env(), limiter=limiter, download_style=style)


@contextmanager
def _fatal_errors() -> Iterator[None]:
    """Errors that every further batch would hit too end the worker with one line."""
    try:
        yield
    except (GazelleAuthError, BitTorrentClientError) as exc:
        raise click.ClickException(str(exc)) from None
    except CoordinatorError as exc:
        raise click.ClickException(f"coordinator: {exc}") from None


def run_loop(batch: Callable[[], Any], loop: LoopOptions) -> list[Any]:
    """Run batches per the loop mode; return their reports (empty leases excluded).

    No work, or a batch in which everything failed, ends the default mode and
    makes --forever wait --idle-sleep seconds; so does an unreachable or
    failing coordinator, which ends the other modes.
    """
    reports = []
    while True:
        try:
            report = batch()
        except CoordinatorError as exc:
            if not (loop.forever and exc.transient):
                raise
            log.error("coordinator: %s; retrying in %.0f s", exc, loop.idle_sleep)
            time.sleep(loop.idle_sleep)
            continue
        if report.leased:
            reports.append(report)
        if loop.once:
            return reports
        # A batch that failed whole (site down?) would only lease the queue empty in vain.
        idle = not report.leased or report.failed == report.leased
        if idle and report.leased:
            log.error(
                "every task of the last batch failed; %s", "waiting" if loop.forever else "stopping"
            )
        if idle:
            if not loop.forever:
                return reports
            time.sleep(loop.idle_sleep)


def _total(reports: list[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for report in reports:
        for key, value in dataclasses.asdict(report).items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return totals


def _summarise(reports: list[Any], noun: str) -> None:
    totals = _total(reports)
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items())
    click.echo(f"{noun}: {counts or 'no work'}")
    if totals.get("failed"):
        sys.exit(1)


@worker.command()
@common_options
def metadata(
    server: str,
    site: str,
    batch: int | None,
    rate_requests: int,
    rate_window: float,
    once: bool,
    forever: bool,
    idle_sleep: float,
    verbose: bool,
) -> None:
    """Find leased albums on a Gazelle site and submit the best torrent of each.

    Preference: FLAC only; 24-bit WEB or Vinyl first, then CD with a 100% log
    and a cue, then any other FLAC; more seeders first within each.
    """
    from worker.metadata import MetadataWorker

    loop = _setup(verbose, once, forever, idle_sleep)
    gazelle = _gazelle(site, rate_requests, rate_window, "auto")
    found = MetadataWorker(
        _coordinator(server), gazelle, site=gazelle.base_url, batch_size=batch or 10
    )
    with _fatal_errors():
        reports = run_loop(found.run_batch, loop)
    _summarise(reports, "albums")


@worker.command()
@common_options
@click.option("--client", "client_kind", type=click.Choice(CLIENT_KINDS), required=True)
@click.option("--rpc", help="The client's RPC URL (default: its usual one on 127.0.0.1).")
@click.option("--rpc-secret", envvar="DISTLEECH_RPC_SECRET", default="", show_envvar=True)
@click.option("--rpc-user", envvar="DISTLEECH_RPC_USER", default="", show_envvar=True)
@click.option("--rpc-password", envvar="DISTLEECH_RPC_PASSWORD", default="", show_envvar=True)
@click.option("--download-dir", help="Where the client saves the files (default: its own).")
@click.option(
    "--download-style",
    type=click.Choice(DOWNLOAD_STYLES),
    default="auto",
    show_default=True,
    help="ajax.php?action=download (API token) or classic torrents.php; auto picks by credentials.",
)
def download(
    server: str,
    site: str,
    batch: int | None,
    rate_requests: int,
    rate_window: float,
    once: bool,
    forever: bool,
    idle_sleep: float,
    verbose: bool,
    client_kind: str,
    rpc: str | None,
    rpc_secret: str,
    rpc_user: str,
    rpc_password: str,
    download_dir: str | None,
    download_style: str,
) -> None:
    """Fetch leased torrents of a site, register them, and add them to a BitTorrent client."""
    from worker.download import DownloadWorker

    loop = _setup(verbose, once, forever, idle_sleep)
    gazelle = _gazelle(site, rate_requests, rate_window, download_style)
    with _fatal_errors():
        client = make_client(
            client_kind,
            rpc or DEFAULT_RPC_URLS[client_kind],
            secret=rpc_secret,
            username=rpc_user,
            password=rpc_password,
        )
        fetcher = DownloadWorker(
            _coordinator(server),
            gazelle,
            client,
            site=gazelle.base_url,
            batch_size=batch or 5,
            download_dir=download_dir,
        )
        reports = run_loop(fetcher.run_batch, loop)
    _summarise(reports, "torrents")


worker.add_command(sync)
