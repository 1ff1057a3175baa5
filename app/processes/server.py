"""Serve the app with gunicorn: several processes, each with a pool of threads.

Each worker process gets a distinct lease slot (DISTLEECH_LEASE_SLOT) so that
processes prefer distinct windows of a queue and rarely race for the same item.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from gunicorn.app.base import BaseApplication

from app.config import Settings

log = logging.getLogger("gunicorn.error")  # gunicorn's own log: it reaches var/log/app.log


def _post_fork(server: Any, worker: Any) -> None:
    slots = int(os.environ.get("DISTLEECH_LEASE_SLOTS", "1"))
    os.environ["DISTLEECH_LEASE_SLOT"] = str(worker.age % max(1, slots))


class DistleechGunicorn(BaseApplication):
    """gunicorn driven from code, so `distleech serve` needs no config file."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the app, waiting (and saying so) while CouchDB does not answer.

        A worker whose load() raises makes gunicorn stop altogether ("worker
        failed to boot"), and a server busy building a big index may not
        answer for minutes: waiting is the only way that ends well.
        """
        from app import create_app
        from app.store.couch import CouchUnavailableError

        delay = 1.0
        while True:
            try:
                return create_app()
            except CouchUnavailableError as exc:
                log.warning("CouchDB did not answer (%s); trying again in %.0f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


def run_gunicorn(settings: Settings, *, host: str, port: int, workers: int) -> None:
    os.environ["DISTLEECH_LEASE_SLOTS"] = str(workers)
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": settings.server.threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "post_fork": _post_fork,
        "accesslog": "-",
        # The path without its query: /register?invite=<secret> and the members'
        # download ?passkey=<passkey> carry secrets that a log must not keep.
        "access_log_format": '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss',
        "errorlog": "-",
        "loglevel": "info",
    }
    DistleechGunicorn(options).run()
