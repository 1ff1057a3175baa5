"""The `distleech` command: one entry point, a subcommand per job."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from app import connect
from app.accounts.auth import TOKEN_ROLES
from app.cli.common import Main, cli_actor, cli_db, cli_settings, fail_on_api_error, shown_url
from app.config import ConfigError, load_settings
from app.errors import ApiError
from app.store.couch import CouchError
from app.timeutil import utcnow


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """distleech: hand out archiving work to many workers and keep track of everything.

    Configuration: config.yaml (or $DISTLEECH_CONFIG) and DISTLEECH_* variables,
    e.g. DISTLEECH_COUCHDB__URL; CouchDB credentials only from
    DISTLEECH_COUCHDB__USERNAME / DISTLEECH_COUCHDB__PASSWORD.
    """
    from app.projectors import register_projectors

    register_projectors()  # rebuild, migrate and every write replay any aggregate type


def _add_subgroups() -> None:
    """Attach the command groups that live beside the code they drive."""
    from app.cli.amqp import amqp
    from app.cli.people import COMMANDS as USER_COMMANDS
    from app.cli.queues import lease
    from app.cli.sources import source
    from app.cli.storage import storage
    from app.cli.tracker import tracker
    from app.cli.webhooks import webhook
    from worker.cli import worker
    from worker.scanner import ingest

    main.add_command(migrate_command)
    main.add_command(ingest)
    main.add_command(worker)
    main.add_command(tracker)
    main.add_command(source)
    main.add_command(webhook)
    main.add_command(storage)
    main.add_command(amqp)
    main.add_command(lease)
    for command in USER_COMMANDS:
        user.add_command(command)


@click.command("migrate")
def migrate_command() -> None:
    """Move a one-database deployment to the event log + read model layout (idempotent).

    Stop the app, the scheduler and the tracker first. Safe to run again after
    a crash or Ctrl-C: it resumes, and a migrated database is left unchanged.
    """
    from app.store.migrate import MigrationError, migrate

    try:
        db = connect(load_settings(), pool_size=4)
        migrate(db, echo=click.echo)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except MigrationError as exc:
        raise click.ClickException(f"migration_stopped: {exc}") from None
    except CouchError as exc:
        raise click.ClickException(f"{exc.error}: {exc.reason}") from None


@main.command()
def init() -> None:
    """Create the database, sync design documents and warm their indexes (idempotent)."""
    from app.store.designdocs import design_doc_targets, warm_views
    from app.store.setup import init_database

    settings = cli_settings()
    db = connect(settings, pool_size=4)
    changed = init_database(db, warm=False)
    click.echo(f"database {db.name} at {shown_url(settings)}: ready")
    click.echo(
        "design documents written: " + (", ".join(changed) if changed else "none (up to date)")
    )
    for database, docs in design_doc_targets(db):  # a big index: progress, never a timeout
        warm_views(database, docs, say=click.echo)


@main.command()
@click.option("--host", help="Address to listen on (server.host).")
@click.option("--port", type=int, help="Port to listen on (server.port).")
@click.option("--workers", type=int, help="Worker processes (server.workers).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the web app on gunicorn (a production WSGI server)."""
    from app.processes.server import run_gunicorn

    settings = cli_settings()
    run_gunicorn(
        settings,
        host=host or settings.server.host,
        port=port or settings.server.port,
        workers=workers or settings.server.workers,
    )


@main.command()
def scheduler() -> None:
    """Run the scheduler (lease reaper, projector, stats); extra copies wait as standby."""
    from scheduler import run_scheduler

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_scheduler(cli_settings(), reload=load_settings)


@main.command()
def run() -> None:
    """Start everything: the bundled CouchDB (unless couchdb.url is set), the app, the scheduler."""
    from app.processes.supervisor import run_all

    sys.exit(run_all(cli_settings()))


def _rows_with_progress(
    binary: IO[bytes], rows: Iterator[tuple[int, str, str]], label: str
) -> Iterator[tuple[int, str, str]]:
    """Show a progress bar by bytes read when writing to a terminal."""
    from tqdm import tqdm

    size = Path(binary.name).stat().st_size if hasattr(binary, "name") else None
    with tqdm(
        total=size, unit="B", unit_scale=True, desc=label, disable=not sys.stderr.isatty()
    ) as bar:
        for count, row in enumerate(rows, 1):
            if count % 1000 == 0:
                bar.update(binary.tell() - bar.n)
            yield row
        bar.update((size or bar.n) - bar.n)


@main.command("import-csv")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def import_csv(files: tuple[Path, ...], as_json: bool) -> None:
    """Import inventory CSVs ("Artist Name", "Album Title" columns); again adds nothing."""
    from app.queues.albums import ImportSummary, import_albums, open_csv_text, read_inventory_csv

    settings = cli_settings()
    db = cli_db(settings)
    failed = False
    for path in files:
        summary = ImportSummary()
        with path.open("rb") as binary, open_csv_text(binary) as text:
            try:
                rows = read_inventory_csv(text, summary)
                import_albums(
                    db,
                    _rows_with_progress(binary, rows, path.name),
                    actor=cli_actor(),
                    now=utcnow(),
                    summary=summary,
                )
            except (ApiError, UnicodeDecodeError) as exc:
                reason = exc.reason if isinstance(exc, ApiError) else f"not UTF-8: {exc}"
                click.echo(f"{path}: refused: {reason}", err=True)
                failed = True
                continue
        _print_summary(path, summary.as_dict(), as_json)
    if failed:
        sys.exit(1)


def _print_summary(path: Path, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"file": str(path), **summary}))
        return
    click.echo(
        f"{path}: {summary['added']} added, {summary['already_present']} already present, "
        f"{summary['rejected']} rejected"
    )
    for rejection in summary["rejections"]:
        click.echo(f"  line {rejection['line']}: {rejection['reason']}")
    if summary["rejected"] > len(summary["rejections"]):
        click.echo(f"  … and {summary['rejected'] - len(summary['rejections'])} more")


@main.group()
def user() -> None:
    """Manage people: add, list, role, disable, enable, passkey, passwd."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return str(password)


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May call every endpoint and manage everything.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@fail_on_api_error
def user_add(name: str, admin: bool, password_stdin: bool) -> None:
    """Add a user with a tracker passkey; the password is asked at a prompt and stored hashed."""
    from app.accounts.auth import add_user
    from app.accounts.people import issue_passkey

    db, actor = cli_db(cli_settings()), cli_actor()
    add_user(db, name, _read_password(password_stdin), admin=admin, actor=actor, now=utcnow())
    issue_passkey(db, name, actor=actor, now=utcnow())
    click.echo(f"user {name} added" + (" (admin)" if admin else ""))


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@fail_on_api_error
def user_passwd(name: str, password_stdin: bool) -> None:
    """Change a user's password."""
    from app.accounts.auth import change_password

    db = cli_db(cli_settings())
    change_password(db, name, _read_password(password_stdin), actor=cli_actor(), now=utcnow())
    click.echo(f"password of {name} changed")


@main.group()
def token() -> None:
    """Manage worker, queuer and reader tokens (X-AUTHENTICATION or Authorization: Bearer)."""


@token.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(TOKEN_ROLES), required=True)
@fail_on_api_error
def token_add(name: str, role: str) -> None:
    """Create a token and print it once; only its hash is stored."""
    from app.accounts.auth import issue_token

    db = cli_db(cli_settings())
    click.echo(issue_token(db, name, role, actor=cli_actor(), now=utcnow()))
    click.echo(f"(token for {role} {name}: shown once, store it now)", err=True)


@token.command("list")
def token_list() -> None:
    """List tokens by name and role (never the tokens themselves)."""
    from app.accounts.auth import list_tokens

    for entry in list_tokens(cli_db(cli_settings())):
        state = "revoked" if entry["revoked"] else "active"
        click.echo(f"{entry['name']}\t{entry['role']}\t{state}")


@token.command("revoke")
@click.argument("name")
@fail_on_api_error
def token_revoke(name: str) -> None:
    """Revoke a token by name (running apps forget it within auth.credential_cache_seconds)."""
    from app.accounts.auth import revoke_token

    count = revoke_token(cli_db(cli_settings()), name, actor=cli_actor(), now=utcnow())
    click.echo(f"{count} token(s) named {name} revoked")


@main.command()
@click.option("--check", is_flag=True, help="Only compare; exit 1 if any projection differs.")
def rebuild(check: bool) -> None:
    """Recompute every projection from events alone (and write the differences)."""
    from app.store.projections import rebuild_projections

    report = rebuild_projections(cli_db(cli_settings()), check_only=check)
    click.echo(
        f"{report.aggregates} aggregates, {report.events} events, {len(report.differing)} differing"
    )
    for doc_id in report.differing[:50]:
        click.echo(f"  differs: {doc_id}")
    if check and report.differing:
        sys.exit(1)
    if not check:
        click.echo(f"{report.written} projections written")


@main.group()
def invite() -> None:
    """One-time invites: a secret that lets one person register (POST /api/register)."""


@invite.command("create")
@click.option("--role", type=click.Choice(["member", "uploader", "admin"]), default="member")
@click.option("--days", type=click.FloatRange(min=0, min_open=True, max=90), default=7.0)
def invite_create(role: str, days: float) -> None:
    """Create an invite and print its link (with the secret) once; only its hash is stored."""
    from app.accounts.invites import create_invite

    settings = cli_settings()
    db = cli_db(settings)
    secret, doc = create_invite(db, inviter=cli_actor(), role=role, days=days, now=utcnow())
    server = settings.server
    base = server.public_url.rstrip("/") or f"http://{server.host}:{server.port}"
    click.echo(f"{base}/register?invite={secret}")
    click.echo(f"(invite for a {role}, until {doc['expires_at']}: shown once)", err=True)


@invite.command("revoke")
@click.argument("invite_id")
@fail_on_api_error
def invite_revoke(invite_id: str) -> None:
    """Revoke an open invite by its id (`invite list` shows it): its link stops working."""
    from app.accounts.invites import revoke_invite

    doc = revoke_invite(cli_db(cli_settings()), invite_id, actor=cli_actor(), now=utcnow())
    click.echo(f"invite {invite_id} {doc['state']}")


@invite.command("list")
def invite_list() -> None:
    """List invites: id, role, state, expiry, who used it (never a secret)."""
    from app.accounts.invites import list_invites, public_invite

    for doc in list_invites(cli_db(cli_settings())):
        shown = public_invite(doc)
        used = f"  used by {shown['user']}" if shown["user"] else ""
        click.echo(
            f"{shown['id']}  {shown['role']:<8}  {shown['state']:<7}  "
            f"until {shown['expires_at']}  by {shown['inviter']}{used}"
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(as_json: bool) -> None:
    """Print the same figures as GET /stats."""
    from app.sites.status import sites_lines, sites_summary
    from app.stats import format_stats_text, get_stats

    settings = cli_settings()
    db = cli_db(settings)
    now = utcnow()
    figures, sites = get_stats(db, now), sites_summary(db, settings, now)
    if as_json:
        click.echo(json.dumps({**figures, **sites}, indent=2))
    else:
        click.echo("\n".join([format_stats_text(figures), *sites_lines(sites)]))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/sites).")
def sites(as_json: bool) -> None:
    """Show replication with every configured site: state, pending events, last outcomes."""
    from app.sites.status import format_sites, site_statuses
    from app.store.events import site_of

    settings = cli_settings()
    db = cli_db(settings)
    statuses = site_statuses(db, settings, utcnow())
    if as_json:
        click.echo(json.dumps({"site": site_of(db), "sites": statuses}, indent=2))
    else:
        click.echo(format_sites(site_of(db), statuses))


_add_subgroups()

if __name__ == "__main__":
    main()
