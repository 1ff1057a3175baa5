"""`distleech amqp …`: the optional bridge to http_downloader's neighbours over AMQP."""

from __future__ import annotations

import json
import logging
import threading

import click

from app.cli.common import cli_db, cli_settings
from app.config import ConfigError
from scheduler import stop_on_signals


@click.group()
def amqp() -> None:
    """AMQP: publish http_downloader's messages, take sync orders (amqp.enabled)."""


@amqp.command()
def bridge() -> None:
    """Run the AMQP bridge in the foreground until Ctrl-C (needs amqp.enabled: true).

    Publishes GL_FILE_DOWNLOADED, GL_FILE_DOWNLOAD_SKIPPED and GL_SOURCE_SYNCHRONIZED
    from the event log and takes sync orders from GL_SYNC_HTTP_SOURCE_ORDERS.
    """
    from app.amqp.bridge import check_settings, run_bridge

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pika logs every failed attempt at length; the bridge logs each once, masked
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    log = logging.getLogger("app.amqp")
    settings = cli_settings()
    if not settings.amqp.enabled:
        log.warning("amqp.enabled is false: not bridging (DISTLEECH_AMQP__ENABLED=true)")
        return
    try:
        check_settings(settings.amqp)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    db = cli_db(settings)
    stop = threading.Event()
    with stop_on_signals(stop):
        run_bridge(db, settings.amqp, stop)
    log.info("AMQP bridge stopped")


@amqp.command()
def status() -> None:
    """Show where the publisher is in the event log (its checkpoint), as JSON."""
    from app.amqp.bridge import shown_url
    from app.amqp.publisher import get_status

    settings = cli_settings()
    report = {"enabled": settings.amqp.enabled, "url": shown_url(settings.amqp)}
    report.update(get_status(cli_db(settings)))
    click.echo(json.dumps(report, indent=2))
