"""The `distleech` command: one entry point, a subcommand per job."""

from __future__ import annotations

import getpass
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import requests

from app import connect, couch_url
from app.config import ConfigError, Settings, load_settings
from app.couch import CouchError, CouchUnavailableError, Database, UnauthorizedError
from app.errors import ApiError, redact_credentials
from app.timeutil import utcnow


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _db(settings: Settings) -> Database:
    from app.store import LegacyLayoutError, init_database

    db = connect(settings, pool_size=4)
    try:
        init_database(db, warm=False)  # a CouchError becomes one line in _Main.invoke
    except LegacyLayoutError as exc:
        raise click.ClickException(f"legacy_layout: {exc}") from None
    return db


def _shown_url(settings: Settings | None = None) -> str:
    """The CouchDB URL as it may be printed: never with its credentials."""
    try:
        settings = settings or load_settings()
    except ConfigError:
        return "CouchDB"
    return redact_credentials(couch_url(settings), settings.couchdb.password)


def _one_line(exc: Exception) -> str | None:
    """`<code>: <reason>` for an error a command can meet; None for a bug."""
    from app.events import ConcurrencyError

    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.reason}"
    if isinstance(exc, CouchUnavailableError):
        # a timeout or a refused connection: say where, and what is commonly wrong
        return (
            f"database_unavailable: CouchDB at {_shown_url()} did not answer ({_why(exc)})."
            " Is it running (`distleech run` starts the bundled one)? If a big index is"
            " still building, try again later or raise couchdb.timeout_seconds."
        )
    if isinstance(exc, UnauthorizedError):
        return (
            f"database_unauthorized: {_shown_url()} refused the configured credentials ({exc})."
            " Set DISTLEECH_COUCHDB__USERNAME and DISTLEECH_COUCHDB__PASSWORD."
        )
    if isinstance(exc, CouchError):
        return f"database_error: {_shown_url()} answered {exc}."
    if isinstance(exc, ConcurrencyError):
        return f"try_again: {exc}"
    if isinstance(exc, requests.RequestException):
        return f"connection_failed: {exc}"
    return None


def _why(exc: CouchError) -> str:
    """The gist of a failed connection, without urllib3's nested wording."""
    for marker, gist in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
    ):
        if marker in exc.reason:
            return gist
    return f"{exc.status} {exc.error}: {exc.reason}" if exc.status else exc.reason


class _Main(click.Group):
    """The `distleech` group: every command's errors end as one line and status 1.

    Commands meet the database (a timeout, a refused connection, a 401) and
    the domain (ApiError) in many places; handling it here, once, means no
    command prints a raw traceback for them, and nothing printed carries a
    credential.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            shown = redact_credentials(exc.message, _couch_password())
            if shown == exc.message or type(exc) is not click.ClickException:
                raise
            raise click.ClickException(shown) from None
        except Exception as exc:  # the boundary of every command
            line = _one_line(exc)
            if line is None:  # a bug: keep its traceback, without credentials
                trace = "".join(traceback.format_exception(exc))
                click.echo(redact_credentials(trace, _couch_password()).rstrip(), err=True)
                line = f"internal_error: {type(exc).__name__}: {exc}"
            raise click.ClickException(redact_credentials(line, _couch_password())) from None


def _couch_password() -> str:
    try:
        return load_settings().couchdb.password
    except ConfigError:
        return ""


def _fail_on_api_error(func: Any) -> Any:
    """Turn our domain errors into a one-line message and exit status 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ApiError as exc:
            raise click.ClickException(f"{exc.code}: {exc.reason}") from None

    return wrapper


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """distleech: hand out archiving work to many workers and keep track of everything.

    Configuration: config.yaml (or $DISTLEECH_CONFIG) and DISTLEECH_* variables,
    e.g. DISTLEECH_COUCHDB__URL; CouchDB credentials only from
    DISTLEECH_COUCHDB__USERNAME / DISTLEECH_COUCHDB__PASSWORD.
    """


def _add_subgroups() -> None:
    """Attach the command groups that live beside the code they drive."""
    from app.ingest_cli import ingest
    from app.migrate import migrate_command
    from app.refworkers.cli import worker
    from app.tracker.cli import tracker

    main.add_command(migrate_command)
    main.add_command(ingest)
    main.add_command(worker)
    main.add_command(tracker)


@main.command()
def init() -> None:
    """Create the database, sync design documents and warm their indexes (idempotent)."""
    from app.designdocs import design_doc_targets, warm_views
    from app.store import init_database

    settings = _settings()
    db = connect(settings, pool_size=4)
    changed = init_database(db, warm=False)
    click.echo(f"database {db.name} at {_shown_url(settings)}: ready")
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
    from app.server import run_gunicorn

    settings = _settings()
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
    run_scheduler(_settings())


@main.command()
def run() -> None:
    """Start everything: the bundled CouchDB (unless couchdb.url is set), the app, the scheduler."""
    from app.supervisor import run_all

    sys.exit(run_all(_settings()))


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
    from app.albums import ImportSummary, import_albums, open_csv_text, read_inventory_csv

    settings = _settings()
    db = _db(settings)
    failed = False
    for path in files:
        summary = ImportSummary()
        with path.open("rb") as binary, open_csv_text(binary) as text:
            try:
                rows = read_inventory_csv(text, summary)
                import_albums(
                    db,
                    _rows_with_progress(binary, rows, path.name),
                    actor=_actor(),
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
    """Manage users (admins log in with HTTP basic auth)."""


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
@_fail_on_api_error
def user_add(name: str, admin: bool, password_stdin: bool) -> None:
    """Add a user; the password is asked at a prompt and stored hashed."""
    from app.auth import add_user

    db = _db(_settings())
    add_user(db, name, _read_password(password_stdin), admin=admin, actor=_actor(), now=utcnow())
    click.echo(f"user {name} added" + (" (admin)" if admin else ""))


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_fail_on_api_error
def user_passwd(name: str, password_stdin: bool) -> None:
    """Change a user's password."""
    from app.auth import change_password

    db = _db(_settings())
    change_password(db, name, _read_password(password_stdin), actor=_actor(), now=utcnow())
    click.echo(f"password of {name} changed")


@main.group()
def token() -> None:
    """Manage worker and queuer tokens (sent as X-AUTHENTICATION or Authorization: Bearer)."""


@token.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["worker", "queuer"]), required=True)
@_fail_on_api_error
def token_add(name: str, role: str) -> None:
    """Create a token and print it once; only its hash is stored."""
    from app.auth import issue_token

    db = _db(_settings())
    click.echo(issue_token(db, name, role, actor=_actor(), now=utcnow()))
    click.echo(f"(token for {role} {name}: shown once, store it now)", err=True)


@token.command("list")
def token_list() -> None:
    """List tokens by name and role (never the tokens themselves)."""
    from app.auth import list_tokens

    for entry in list_tokens(_db(_settings())):
        state = "revoked" if entry["revoked"] else "active"
        click.echo(f"{entry['name']}\t{entry['role']}\t{state}")


@token.command("revoke")
@click.argument("name")
@_fail_on_api_error
def token_revoke(name: str) -> None:
    """Revoke a token by name (running apps forget it within auth.credential_cache_seconds)."""
    from app.auth import revoke_token

    count = revoke_token(_db(_settings()), name, actor=_actor(), now=utcnow())
    click.echo(f"{count} token(s) named {name} revoked")


@main.command()
@click.option("--check", is_flag=True, help="Only compare; exit 1 if any projection differs.")
def rebuild(check: bool) -> None:
    """Recompute every projection from events alone (and write the differences)."""
    from app.projections import rebuild_projections

    report = rebuild_projections(_db(_settings()), check_only=check)
    click.echo(
        f"{report.aggregates} aggregates, {report.events} events, {len(report.differing)} differing"
    )
    for doc_id in report.differing[:50]:
        click.echo(f"  differs: {doc_id}")
    if check and report.differing:
        sys.exit(1)
    if not check:
        click.echo(f"{report.written} projections written")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats(as_json: bool) -> None:
    """Print the same figures as GET /stats."""
    from app.stats import format_stats_text, get_stats

    figures = get_stats(_db(_settings()), utcnow())
    click.echo(json.dumps(figures, indent=2) if as_json else format_stats_text(figures))


_add_subgroups()

if __name__ == "__main__":
    main()
