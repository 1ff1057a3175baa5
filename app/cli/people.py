"""`distleech user list|role|disable|enable|passkey`: the people commands beside `user add`.

They call the operations of app/accounts/people.py, as the admin API and
the admin pages do.
"""

from __future__ import annotations

import json

import click

from app.accounts import people
from app.cli.common import cli_actor, cli_db, cli_settings, fail_on_api_error
from app.timeutil import utcnow


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def user_list(as_json: bool) -> None:
    """List people: name, role, state, tracker totals."""
    db = cli_db(cli_settings())
    shown = people.list_people_shown(db)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for person in shown:
        totals = (
            f"  up {person['uploaded']}  down {person['downloaded']}  snatches {person['snatches']}"
            if "uploaded" in person
            else "  (no passkey)"
        )
        invites = "  may invite" if person["can_invite"] else ""
        click.echo(f"{person['name']}  {person['role']:<8}  {person['state']:<8}{invites}{totals}")


@click.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(people.PERSON_ROLES))
@click.option("--invites/--no-invites", default=None, help="Allow or forbid inviting members.")
@fail_on_api_error
def user_role(name: str, role: str, invites: bool | None) -> None:
    """Set a person's role (member, uploader, admin) and right to invite."""
    db = cli_db(cli_settings())
    people.change_person(db, name, role=role, can_invite=invites, actor=cli_actor(), now=utcnow())
    click.echo(f"{name} is now {role}")


@click.command("disable")
@click.argument("name")
@fail_on_api_error
def user_disable(name: str) -> None:
    """Disable a person: no login, sessions end, the tracker refuses their passkey."""
    people.disable_person(cli_db(cli_settings()), name, actor=cli_actor(), now=utcnow())
    click.echo(f"{name} disabled")


@click.command("enable")
@click.argument("name")
@fail_on_api_error
def user_enable(name: str) -> None:
    """Enable a disabled person again (their passkey works again)."""
    people.enable_person(cli_db(cli_settings()), name, actor=cli_actor(), now=utcnow())
    click.echo(f"{name} enabled")


@click.command("passkey")
@click.argument("name")
@fail_on_api_error
def user_passkey(name: str) -> None:
    """Issue a new tracker passkey to a person and print it (the old one stops working)."""
    passkey = people.issue_passkey(cli_db(cli_settings()), name, actor=cli_actor(), now=utcnow())
    click.echo(passkey)


COMMANDS = (user_list, user_role, user_disable, user_enable, user_passkey)
