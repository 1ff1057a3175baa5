"""What every `distleech` command shares: settings, the database, the actor, one-line errors.

app.cli.main and app.cli.tracker both import this module; neither imports the other's
helpers, so there is no cycle.
"""

from __future__ import annotations

import functools
import getpass
import traceback
from typing import Any

import click
import requests

from app import connect, couch_url
from app.config import ConfigError, Settings, load_settings
from app.errors import ApiError, redact_credentials
from app.store.couch import CouchError, CouchUnavailableError, Database, UnauthorizedError


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def cli_settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def cli_db(settings: Settings) -> Database:
    from app.store.setup import LegacyLayoutError, init_database

    db = connect(settings, pool_size=4)
    try:
        init_database(db, warm=False)  # a CouchError becomes one line in Main.invoke
    except LegacyLayoutError as exc:
        raise click.ClickException(f"legacy_layout: {exc}") from None
    return db


def shown_url(settings: Settings | None = None) -> str:
    """The CouchDB URL as it may be printed: never with its credentials."""
    try:
        settings = settings or load_settings()
    except ConfigError:
        return "CouchDB"
    return redact_credentials(couch_url(settings), settings.couchdb.password)


def one_line(exc: Exception) -> str | None:
    """`<code>: <reason>` for an error a command can meet; None for a bug."""
    from app.store.events import ConcurrencyError

    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.reason}"
    if isinstance(exc, CouchUnavailableError):
        # a timeout or a refused connection: say where, and what is commonly wrong
        return (
            f"database_unavailable: CouchDB at {shown_url()} did not answer"
            f" ({why_unanswered(exc)})."
            " Is it running (`distleech run` starts the bundled one)? If a big index is"
            " still building, try again later or raise couchdb.timeout_seconds."
        )
    if isinstance(exc, UnauthorizedError):
        return (
            f"database_unauthorized: {shown_url()} refused the configured credentials ({exc})."
            " Set DISTLEECH_COUCHDB__USERNAME and DISTLEECH_COUCHDB__PASSWORD."
        )
    if isinstance(exc, CouchError):
        return f"database_error: {shown_url()} answered {exc}."
    if isinstance(exc, ConcurrencyError):
        return f"try_again: {exc}"
    if isinstance(exc, requests.RequestException):
        return f"connection_failed: {exc}"
    return None


def why_unanswered(exc: CouchError) -> str:
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


class Main(click.Group):
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
            shown = redact_credentials(exc.message, couch_password())
            if shown == exc.message or type(exc) is not click.ClickException:
                raise
            raise click.ClickException(shown) from None
        except Exception as exc:  # the boundary of every command
            line = one_line(exc)
            if line is None:  # a bug: keep its traceback, without credentials
                trace = "".join(traceback.format_exception(exc))
                click.echo(redact_credentials(trace, couch_password()).rstrip(), err=True)
                line = f"internal_error: {type(exc).__name__}: {exc}"
            raise click.ClickException(redact_credentials(line, couch_password())) from None


def couch_password() -> str:
    try:
        return load_settings().couchdb.password
    except ConfigError:
        return ""


def fail_on_api_error(func: Any) -> Any:
    """Turn our domain errors into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ApiError as exc:
            raise click.ClickException(f"{exc.code}: {exc.reason}") from None

    return wrapper
