"""`distleech lease list|release|retry|queue-url`: the queue admin's commands.

They call the operations the admin API and the admin pages call
(app/queues/leases.py, app/queues/archive.py), with the CLI's actor.
"""

from __future__ import annotations

import json

import click

from app.cli.common import cli_actor, cli_db, cli_settings, fail_on_api_error
from app.queues import archive, leases
from app.timeutil import utcnow


@click.group("lease")
def lease() -> None:
    """Leased work: list it, release a lease by hand, retry or queue archive URLs."""


@lease.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/admin/leases).")
def lease_list(as_json: bool) -> None:
    """List what every queue has leased now, soonest to expire first."""
    groups = leases.list_leases(cli_db(cli_settings()), utcnow())
    if as_json:
        click.echo(json.dumps({g.name: {"total": g.total, "items": g.items} for g in groups}))
        return
    for group in groups:
        click.echo(f"{group.name}: {group.total} leased")
        for item in group.items:
            holders = ", ".join(h["holder"] for h in item["holders"])
            stale = "  (expired)" if item["expired"] else ""
            click.echo(
                f"  {item['id']}  {holders}  until {item['expires_at']}{stale}  {item['what']}"
            )


@lease.command("release")
@click.argument("item_id", metavar="ID")
@click.option("--reason", help="Why (recorded with the event); default: released by hand.")
@fail_on_api_error
def lease_release(item_id: str, reason: str | None) -> None:
    """Release the lease of ID (e.g. album:123, urltask:…) now: it is ready in its queue again."""
    report = leases.release_lease(
        cli_db(cli_settings()),
        leases.check_item_id(item_id),
        actor=cli_actor(),
        now=utcnow(),
        reason=leases.check_release_reason(reason),
    )
    click.echo(f"{report['id']} released from {', '.join(report['released'])}: {report['state']}")


@lease.command("retry")
@click.argument("task_id")
@fail_on_api_error
def lease_retry(task_id: str) -> None:
    """Queue the failed URL task TASK_ID again (a new round); a task not failed is left alone."""
    report = archive.retry_task(
        cli_db(cli_settings()), archive.check_task_id(task_id), actor=cli_actor(), now=utcnow()
    )
    if report["recorded"]:
        click.echo(f"task {report['id']} queued again: {report['url']}")
    else:
        click.echo(f"task {report['id']} is {report['state']}, not failed: nothing changed")


@lease.command("queue-url")
@click.argument("url")
@click.option("--mode", default="0", help="0 archive (default), 1 re-archive, 2 delete.")
@fail_on_api_error
def lease_queue_url(url: str, mode: str) -> None:
    """Queue URL for archiving, as POST /api/worker/queue does (a waiting URL is not doubled)."""
    result = archive.queue_url(
        cli_db(cli_settings()),
        archive.check_url(url),
        archive.check_mode(mode),
        actor=cli_actor(),
        now=utcnow(),
    )
    click.echo(f"{result.status}: task {result.task['id']} ({result.task['url']})")
