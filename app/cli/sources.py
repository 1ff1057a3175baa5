"""`distleech source …`: manage remote sources and order syncs (the admin API's twin).

Every command calls the operations the admin API calls (app/sources/), with
the CLI's actor and the same checks, so a bad value fails with the API's
error code. Cookies are read from a file or an environment variable, never
from an argument: arguments show up in `ps` and in shell history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from app.cli.common import cli_actor, cli_db, cli_settings, fail_on_api_error
from app.errors import InvalidCookiesError, ValidationFailedError
from app.sources import aggregate, checks, cookies, files, orders
from app.store.couch import Database
from app.timeutil import utcnow


@click.group()
def source() -> None:
    """Remote sources synchronised by workers with gallery-dl."""


def _schedule(cron: str | None, every: str | None) -> dict[str, Any] | None:
    """The schedule of --cron or --every, checked as the API checks it (None: neither)."""
    if cron is not None and every is not None:
        raise ValidationFailedError("Give --cron or --every, not both.")
    if cron is not None:
        return checks.check_schedule({"cron": cron})
    if every is not None:
        return checks.check_schedule({"interval_seconds": every})
    return None


def _read_cookies(cookies_file: Path | None, cookies_env: str | None) -> str | None:
    """The cookies text from --cookies-file or --cookies-env (None when neither is given)."""
    if cookies_file is not None and cookies_env is not None:
        raise ValidationFailedError("Give --cookies-file or --cookies-env, not both.")
    if cookies_file is not None:
        try:
            return checks.check_cookies(cookies_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidCookiesError(f"cannot read {cookies_file}: {exc}") from None
    if cookies_env is not None:
        if cookies_env not in os.environ:
            raise InvalidCookiesError(f"the environment variable {cookies_env} is not set.")
        return checks.check_cookies(os.environ[cookies_env])
    return None


def _store_cookies(db: Database, source_id: str, text: str | None, *, remove: bool) -> None:
    """Store (or remove) the secret, then record that it changed."""
    if text is not None:
        cookies.set_cookies(db, source_id, text)
        aggregate.record_cookies_change(db, source_id, True, actor=cli_actor(), now=utcnow())
    elif remove:
        cookies.remove_cookies(db, source_id)
        aggregate.record_cookies_change(db, source_id, False, actor=cli_actor(), now=utcnow())


def _describe(doc: dict[str, Any]) -> str:
    """One line per source: id, URL, directory, schedule and flags (never cookies)."""
    schedule = doc.get("schedule") or {}
    when = schedule.get("cron") or (
        f"every {schedule['interval_seconds']} s" if schedule else "by hand"
    )
    flags = [] if doc.get("enabled", True) else ["disabled"]
    flags += ["remote deletes"] if doc.get("sync_remote_deletes") else []
    flags += ["cookies"] if doc.get("has_cookies") else []
    extra = f"  [{', '.join(flags)}]" if flags else ""
    return f"{doc['id']}  {doc['url']}  -> {doc['content_path']}  ({when}){extra}"


cookie_options = [
    click.option("--cookies-file", type=click.Path(dir_okay=False, path_type=Path)),
    click.option("--cookies-env", metavar="VAR", help="Read cookies.txt text from VAR."),
]


def with_cookie_options(func: Any) -> Any:
    """Add --cookies-file and --cookies-env (add and change take the same two)."""
    for option in reversed(cookie_options):
        func = option(func)
    return func


@source.command("add")
@click.argument("source_id", metavar="ID")
@click.argument("url")
@click.argument("content_path")
@click.option("--cron", metavar="EXPR", help="Sync on this crontab schedule (UTC).")
@click.option("--every", metavar="SECONDS", help="Sync this often.")
@click.option("--remote-deletes", is_flag=True, help="Delete local files gone remotely.")
@with_cookie_options
@fail_on_api_error
def source_add(
    source_id: str,
    url: str,
    content_path: str,
    cron: str | None,
    every: str | None,
    remote_deletes: bool,
    cookies_file: Path | None,
    cookies_env: str | None,
) -> None:
    """Add source ID: sync URL into CONTENT_PATH (relative to the content root)."""
    fields = checks.checked_fields({"url": url, "content_path": content_path})
    spec = aggregate.SourceSpec(
        id=checks.check_source_id(source_id),
        schedule=_schedule(cron, every),
        sync_remote_deletes=remote_deletes,
        **fields,
    )
    text = _read_cookies(cookies_file, cookies_env)
    db = cli_db(cli_settings())
    doc = aggregate.add_source(db, spec, actor=cli_actor(), now=utcnow())
    _store_cookies(db, spec.id, text, remove=False)
    click.echo(f"added {_describe(aggregate.get_source(db, doc['id']))}")


@source.command("change")
@click.argument("source_id", metavar="ID")
@click.option("--url")
@click.option("--content-path")
@click.option("--cron", metavar="EXPR", help="Sync on this crontab schedule (UTC).")
@click.option("--every", metavar="SECONDS", help="Sync this often.")
@click.option("--no-schedule", is_flag=True, help="Sync only when ordered.")
@click.option("--remote-deletes/--no-remote-deletes", default=None)
@with_cookie_options
@click.option("--no-cookies", is_flag=True, help="Remove the source's cookies.")
@fail_on_api_error
def source_change(source_id: str, **options: Any) -> None:
    """Change source ID: only the options given change."""
    source_id = checks.check_source_id(source_id)
    body = {k: options[k] for k in ("url", "content_path") if options[k] is not None}
    if options["remote_deletes"] is not None:
        body["sync_remote_deletes"] = options["remote_deletes"]
    fields = checks.checked_fields(body)
    if options["no_schedule"] and (options["cron"] or options["every"]):
        raise ValidationFailedError("Give --no-schedule or a schedule, not both.")
    if options["no_schedule"] or options["cron"] or options["every"]:
        fields["schedule"] = _schedule(options["cron"], options["every"])
    text = _read_cookies(options["cookies_file"], options["cookies_env"])
    if text is not None and options["no_cookies"]:
        raise ValidationFailedError("Give new cookies or --no-cookies, not both.")
    db = cli_db(cli_settings())
    aggregate.get_source(db, source_id)
    _, changed = aggregate.change_source(db, source_id, fields, actor=cli_actor(), now=utcnow())
    _store_cookies(db, source_id, text, remove=options["no_cookies"])
    word = "changed" if changed or text is not None or options["no_cookies"] else "unchanged"
    click.echo(f"{word} {_describe(aggregate.get_source(db, source_id))}")


@source.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/sources).")
def source_list(as_json: bool) -> None:
    """List every source."""
    docs = [aggregate.public_source(d) for d in aggregate.list_sources(cli_db(cli_settings()))]
    if as_json:
        click.echo(json.dumps({"sources": docs}))
        return
    for doc in docs:
        click.echo(_describe(doc))
    if not docs:
        click.echo("no sources")


@source.command("show")
@click.argument("source_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/sources/ID).")
@fail_on_api_error
def source_show(source_id: str, as_json: bool) -> None:
    """Show source ID with its current order and file counts."""
    db = cli_db(cli_settings())
    doc = aggregate.get_source(db, checks.check_source_id(source_id))
    order = orders.public_order(orders.get_order(db, source_id))
    counts = files.count_files(db, source_id)
    if as_json:
        click.echo(json.dumps({**aggregate.public_source(doc), "order": order, "files": counts}))
        return
    click.echo(_describe(doc))
    if order is not None:
        click.echo(f"  order {order['order']}: {order['state']} (attempts {order['attempts']})")
    click.echo("  files: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _set_enabled(source_id: str, enabled: bool) -> None:
    """`enable` and `disable`: say whether anything changed."""
    db = cli_db(cli_settings())
    source_id = checks.check_source_id(source_id)
    _, changed = orders.set_enabled(db, source_id, enabled, actor=cli_actor(), now=utcnow())
    state = "enabled" if enabled else "disabled"
    click.echo(f"{source_id} {state}" if changed else f"{source_id} was {state} already")


@source.command("disable")
@click.argument("source_id", metavar="ID")
@fail_on_api_error
def source_disable(source_id: str) -> None:
    """Disable source ID: no scheduled syncs; a waiting order is cancelled."""
    _set_enabled(source_id, False)


@source.command("enable")
@click.argument("source_id", metavar="ID")
@fail_on_api_error
def source_enable(source_id: str) -> None:
    """Enable source ID again; its schedule counts from now."""
    _set_enabled(source_id, True)


@source.command("sync")
@click.argument("source_id", metavar="ID")
@fail_on_api_error
def source_sync(source_id: str) -> None:
    """Order a sync of source ID now (an order already waiting or leased is not doubled)."""
    result = orders.order_sync(
        cli_db(cli_settings()),
        checks.check_source_id(source_id),
        by="admin",
        actor=cli_actor(),
        now=utcnow(),
    )
    click.echo(f"{result.status}: order {result.order['order']} ({result.order['state']})")
