"""`distleech webhook …`: register webhooks, see deliveries, redeliver dead letters.

The twin of the admin API's /api/webhooks routes: the same operations
(app/stream/), called directly on the database. Deliveries themselves are
made by the scheduler's deliver_webhooks job, never by these commands.
"""

from __future__ import annotations

import json

import click

from app.cli.common import cli_actor, cli_db, cli_settings, fail_on_api_error
from app.timeutil import utcnow


@click.group()
def webhook() -> None:
    """Webhooks: signed deliveries of the event log to other services."""


@webhook.command("add")
@click.argument("url")
@click.option("--type", "types", multiple=True, help="Aggregate type to deliver (repeatable).")
@click.option("--name", "names", multiple=True, help="Event name to deliver (repeatable).")
@click.option(
    "--since",
    type=click.Choice(["now", "start"]),
    default="now",
    show_default=True,
    help="Deliver events from now on, or the whole log first.",
)
@fail_on_api_error
def webhook_add(url: str, types: tuple[str, ...], names: tuple[str, ...], since: str) -> None:
    """Register a webhook and print its id and signing secret (shown once)."""
    from app.stream.webhooks import register_webhook

    settings = cli_settings()
    made = register_webhook(
        cli_db(settings),
        url,
        types=list(types),
        names=list(names),
        since=since,
        allow_private=settings.events.webhook_allow_private,
        actor=cli_actor(),
        now=utcnow(),
    )
    click.echo(f"{made['id']} {made['secret']}")
    click.echo(
        f"(webhook {made['id']} for {made['url']}: the secret signs every delivery"
        " (X-Distleech-Signature: sha256=<HMAC-SHA256 of the body>); shown once, store it now)",
        err=True,
    )


@webhook.command("list")
@fail_on_api_error
def webhook_list() -> None:
    """List webhooks: id, URL, filters, and where their deliveries are.

    `pending` is an estimate (~): changes of the log after the position,
    from the seqs alone, so listing reads no log rows (as GET /api/webhooks).
    """
    from app.stream.delivery import delivery_state
    from app.stream.feed import current_seq
    from app.stream.webhooks import list_webhooks, public_webhook

    db = cli_db(cli_settings())
    log_seq = current_seq(db)
    for doc in list_webhooks(db):
        shown = public_webhook(doc)
        state = delivery_state(db, shown["id"], log_seq=log_seq)
        pending = "?" if state["pending"] is None else f"~{state['pending']}"
        shown_filters = [
            *(f"type={t}" for t in shown["types"]),
            *(f"name={n}" for n in shown["names"]),
        ]
        filters = " ".join(shown_filters) or "all"
        click.echo(
            f"{shown['id']}  {shown['url']}  [{filters}]  delivered {state['delivered']},"
            f" pending {pending}, failures {state['failures']},"
            f" dead letters {state['dead_letters']}"
            + (f", last error: {state['last_error']}" if state["last_error"] else "")
        )


@webhook.command("remove")
@click.argument("webhook_id")
@fail_on_api_error
def webhook_remove(webhook_id: str) -> None:
    """Remove a webhook: no more deliveries; its secret and dead letters are deleted."""
    from app.stream.webhooks import remove_webhook

    db = cli_db(cli_settings())
    remove_webhook(db, webhook_id, actor=cli_actor(), now=utcnow())
    click.echo(f"webhook {webhook_id} removed")


@webhook.command("dead-letters")
@click.argument("webhook_id")
@fail_on_api_error
def webhook_dead_letters(webhook_id: str) -> None:
    """List a webhook's dead letters (deliveries that failed every attempt), one JSON a line."""
    from app.stream.deadletters import list_dead_letters, public_dead_letter
    from app.stream.webhooks import get_webhook

    db = cli_db(cli_settings())
    get_webhook(db, webhook_id)
    for doc in list_dead_letters(db, webhook_id):
        click.echo(json.dumps(public_dead_letter(doc), ensure_ascii=False))


@webhook.command("redeliver")
@click.argument("webhook_id")
@click.argument("delivery", required=False)
@fail_on_api_error
def webhook_redeliver(webhook_id: str, delivery: str | None) -> None:
    """Queue one dead letter (or all of the webhook's) for the delivery job to send again."""
    from app.stream.deadletters import queue_redelivery
    from app.stream.webhooks import get_webhook

    db = cli_db(cli_settings())
    get_webhook(db, webhook_id)
    queued = queue_redelivery(db, webhook_id, delivery, utcnow())
    click.echo(f"{len(queued)} dead letter(s) of webhook {webhook_id} queued for redelivery")
