"""`distleech tracker …`: run the tracker, and manage its users, torrents and whitelist.

The management commands call the same operations as the Mika-style API
(app.tracker.accounts), so a running tracker learns their changes the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import click

from app.cli.common import cli_actor, cli_db, cli_settings
from app.errors import ApiError
from app.timeutil import utcnow
from app.tracker import accounts, members


def _db_and_actor() -> tuple[Any, str]:
    return cli_db(cli_settings()), cli_actor()


def _run(operation: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an operation; our domain errors become a one-line message and exit status 1."""
    try:
        return operation(*args, **kwargs)
    except ApiError as exc:
        raise click.ClickException(f"{exc.code}: {exc.reason}") from None


@click.group()
def tracker() -> None:
    """The private BitTorrent tracker: serve announces, manage users, torrents, whitelist."""


@tracker.command()
@click.option("--host", help="Address to listen on (tracker.host).")
@click.option("--port", type=int, help="Port to listen on (tracker.port, default 6969).")
def serve(host: str | None, port: int | None) -> None:
    """Run the tracker process (announce and scrape), in the foreground."""
    from app.tracker.server import run_tracker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = cli_settings()
    tracker_settings = settings.tracker
    if host is not None:
        tracker_settings = dataclasses.replace(tracker_settings, host=host)
    if port is not None:
        tracker_settings = dataclasses.replace(tracker_settings, port=port)
    run_tracker(dataclasses.replace(settings, tracker=tracker_settings))


# ---------------------------------------------------------------- users


@tracker.group()
def user() -> None:
    """Tracker users: who may announce, by passkey."""


def _next_user_id(db: Any) -> int:
    """One more than the highest user id so far (a CLI convenience: sites pass their own)."""
    ids = [doc["user_id"] for doc in db.iter_prefix(f"{accounts.TRACKER_USER}:")]
    return max(ids, default=0) + 1


@user.command("add")
@click.argument("name")
@click.option("--user-id", type=int, help="The user's id (default: one more than the highest).")
@click.option("--no-leech", is_flag=True, help="May only seed, never download.")
@click.option("--passkey", help="Use this passkey (16-64 letters and digits) instead of a new one.")
def user_add(name: str, user_id: int | None, no_leech: bool, passkey: str | None) -> None:
    """Add a tracker user and print their passkey once (only its hash is stored)."""
    db, actor = _db_and_actor()
    doc, key = _run(
        members.register_user,
        db,
        _next_user_id(db) if user_id is None else user_id,
        name=name,
        can_leech=not no_leech,
        passkey=passkey,
        actor=actor,
        now=utcnow(),
    )
    click.echo(key)
    click.echo(
        f"(passkey of tracker user {doc['user_id']} {name}: shown once, store it now)", err=True
    )


@user.command("delete")
@click.argument("user_id", type=int)
def user_delete(user_id: int) -> None:
    """Delete a tracker user: their passkey stops working (totals are kept)."""
    db, actor = _db_and_actor()
    _run(members.delete_user, db, user_id, actor=actor, now=utcnow())
    click.echo(f"tracker user {user_id} deleted")


@user.command("show")
@click.argument("user_id", type=int)
def user_show(user_id: int) -> None:
    """Print a tracker user's totals."""
    db, _ = _db_and_actor()
    doc = members.public_user(_run(members.get_tracker_user, db, user_id))
    click.echo("\n".join(f"{key}: {value}" for key, value in doc.items()))


# ---------------------------------------------------------------- whitelist


@tracker.group()
def whitelist() -> None:
    """Client whitelist by peer_id prefix (an empty whitelist allows every client)."""


# Prefixes start with '-' (-qB, -TR): read as arguments, not as unknown options.
_PREFIX_ARGS = {"ignore_unknown_options": True}


@whitelist.command("add", context_settings=_PREFIX_ARGS)
@click.argument("prefix")
@click.argument("client")
def whitelist_add(prefix: str, client: str) -> None:
    """Allow clients whose peer_id starts with PREFIX (e.g. -qB, -TR, -lt)."""
    db, actor = _db_and_actor()
    _run(accounts.add_whitelist_entry, db, prefix, client, actor=actor, now=utcnow())
    click.echo(f"{prefix} ({client}) whitelisted")


@whitelist.command("remove", context_settings=_PREFIX_ARGS)
@click.argument("prefix")
def whitelist_remove(prefix: str) -> None:
    db, actor = _db_and_actor()
    _run(accounts.remove_whitelist_entry, db, prefix, actor=actor, now=utcnow())
    click.echo(f"{prefix} removed from the whitelist")


@whitelist.command("list")
def whitelist_list() -> None:
    db, _ = _db_and_actor()
    for entry in accounts.list_whitelist(db):
        click.echo(f"{entry['prefix']}\t{entry['client']}")


# ---------------------------------------------------------------- torrents


@tracker.group()
def torrent() -> None:
    """Tracked torrents (the registry's own are registered automatically)."""


@torrent.command("add")
@click.argument("info_hash")
@click.option("--name", default="", help="A title, for people reading counts.")
@click.option("--torrent-id", type=int, help="The site's id (default: from the info hash).")
def torrent_add(info_hash: str, name: str, torrent_id: int | None) -> None:
    """Track a torrent by info hash."""
    db, actor = _db_and_actor()
    checked = _run(accounts.check_info_hash, info_hash)
    chosen = accounts.registry_torrent_id(checked) if torrent_id is None else torrent_id
    doc = _run(accounts.register_torrent, db, checked, chosen, name, actor=actor, now=utcnow())
    click.echo(f"{doc['info_hash']} tracked as torrent {doc['torrent_id']}")


@torrent.command("remove")
@click.argument("info_hash")
def torrent_remove(info_hash: str) -> None:
    """Stop tracking a torrent (announces for it are refused from then on)."""
    db, actor = _db_and_actor()
    doc = _run(accounts.unregister_torrent, db, info_hash, actor=actor, now=utcnow())
    click.echo(f"{doc['info_hash']} no longer tracked")
