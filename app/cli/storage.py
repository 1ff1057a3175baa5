"""`distleech storage …`: storage status, and checking a root against the records.

`status` prints what GET /api/storage answers; `check` walks a root's
directory on this machine and records what is missing (app/storage/check.py),
which GET /api/storage and the dashboard then show as the last check.
"""

from __future__ import annotations

import json
from typing import Any

import click

from app.cli.common import cli_db, cli_settings, fail_on_api_error
from app.storage import check, status
from app.timeutil import utcnow


@click.group()
def storage() -> None:
    """Storage status: files and bytes recorded per root, free space, files missing on disk."""


@storage.command("status")
@click.option("--recount", is_flag=True, help="Count the records now instead of the snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/storage).")
def status_command(recount: bool, as_json: bool) -> None:
    """Print each root's recorded files and bytes, free space and last check."""
    settings = cli_settings()
    db = cli_db(settings)
    now = utcnow()
    if recount:
        status.snapshot_storage(db, now, force=True)
    figures = status.get_storage(db, settings, now)
    click.echo(json.dumps(figures, indent=2) if as_json else status.format_storage_text(figures))


@storage.command("check")
@click.argument("root")
@click.option("--path", "path", help="The root's directory here (default: from config.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_on_api_error
def check_command(root: str, path: str | None, as_json: bool) -> None:
    """Report files the records place on ROOT ("content" or a volume's path) that are not there.

    Exit status 1 when any is missing or of another size.
    """
    settings = cli_settings()
    db = cli_db(settings)
    result = check.check_root(db, settings, root, path=path, now=utcnow())
    result = {k: v for k, v in result.items() if k not in ("_id", "_rev")}
    click.echo(json.dumps(result, indent=2) if as_json else format_check(result))
    if result["missing"] or result["mismatched"]:
        raise SystemExit(1)


def format_check(result: dict[str, Any]) -> str:
    """The check's outcome in lines: counts, then the example names."""
    lines = [
        f"{result['root']} at {result['path']}: {result['checked']:,} recorded files checked, "
        f"{result['missing']:,} missing, {result['mismatched']:,} of another size, "
        f"{result['unrecorded']:,} on disk unrecorded"
    ]
    lines += [f"missing     {name}" for name in result["examples"]]
    for entry in result["mismatched_examples"]:
        lines.append(
            f"size differs {entry['location']}: {entry['size']} recorded, {entry['found']} here"
        )
    return "\n".join(lines)
