"""distleech: a distributed archiving coordinator on CouchDB."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from app.accounts.auth import Authenticator
from app.accounts.sessions import LoginLimiter
from app.config import Settings, load_settings
from app.errors import register_error_handlers
from app.queues.leasing import QueueLeaser
from app.store.couch import CouchServer, Database
from app.timeutil import Clock, utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Context:
    """What every request handler needs, built once per process by create_app."""

    settings: Settings
    db: Database
    leaser: QueueLeaser
    auth: Authenticator
    clock: Clock
    peers_db: Database  # the tracker's ephemeral swarm database (app.tracker.peersdb)
    login_limiter: LoginLimiter  # failed logins in this process (app/accounts/sessions.py)


def couch_url(settings: Settings) -> str:
    """The configured CouchDB, or the bundled server that `distleech run` starts."""
    return settings.couchdb.url or f"http://127.0.0.1:{settings.couchdb.bundled_port}"


def connect(settings: Settings, pool_size: int | None = None) -> Database:
    """Open the configured database (credentials come from the environment only)."""
    server = CouchServer(
        couch_url(settings),
        username=settings.couchdb.username,
        password=settings.couchdb.password,
        timeout=settings.couchdb.timeout_seconds,
        pool_size=pool_size or max(4, settings.server.threads * 2),
    )
    companions = {
        "events": settings.couchdb.events_database,
        "secrets": settings.couchdb.secrets_database,
        "peers": settings.tracker.peers_database,
    }
    return Database(
        server,
        settings.couchdb.database,
        companions={role: name for role, name in companions.items() if name},
        site=settings.site.name,
    )


def create_app(test_config: Mapping[str, Any] | None = None, *, clock: Clock = utcnow) -> Flask:
    """Build the WSGI app: the only place that wires settings, database and blueprints."""
    from app.api import register_blueprints
    from app.projectors import register_projectors
    from app.sites.links import site_share
    from app.store.setup import init_database
    from app.web import register_pages

    register_projectors()
    settings = load_settings(test_config)
    db = connect(settings)
    init_database(db, warm=False)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    share, shares = site_share(settings)
    leaser = QueueLeaser(
        db,
        lease_slot=int(os.environ.get("DISTLEECH_LEASE_SLOT", "0")),
        lease_slots=int(os.environ.get("DISTLEECH_LEASE_SLOTS", "1")),
        site_share=share,
        site_shares=shares,
    )
    limiter = LoginLimiter(settings.auth)
    auth = Authenticator(
        db,
        cache_seconds=settings.auth.credential_cache_seconds,
        anonymous_workers=settings.auth.anonymous_workers,
        clock=clock,
        limiter=limiter,
    )
    from app.tracker.peersdb import init_peers_database, open_peers_database

    peers_db = open_peers_database(db, settings)
    init_peers_database(peers_db)
    app.extensions["distleech"] = Context(settings, db, leaser, auth, clock, peers_db, limiter)
    register_error_handlers(app)
    register_blueprints(app)
    register_pages(app)
    return app
