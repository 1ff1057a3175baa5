"""Test fixtures: one real bundled CouchDB-compatible server per session, a fresh
database per test, and clients that carry real credentials."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app import create_app
from app.accounts.auth import add_user, issue_token
from app.processes.bundled import running, wait_until_up
from app.projectors import register_projectors
from app.store.couch import CouchServer, CouchUnavailableError, Database
from app.store.setup import init_database

# tests/browser.py: chromium, live_server, page; tests/rabbitmq.py: a private broker
pytest_plugins = ["browser", "rabbitmq"]

register_projectors()  # as create_app, the CLI and the scheduler do at start-up

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session", autouse=True)
def couch_credentials_for_everything():
    """TEST_COUCHDB_USER/PASSWORD reach every app, CLI and process the tests start.

    Apache CouchDB 3.x makes new databases admin-only, so a test server with
    credentials needs them everywhere; through the app's own environment
    settings (DISTLEECH_COUCHDB__USERNAME/PASSWORD) every create_app and every
    subprocess that inherits the environment sends them, as in production.
    """
    user, password = os.environ.get("TEST_COUCHDB_USER"), os.environ.get("TEST_COUCHDB_PASSWORD")
    with pytest.MonkeyPatch.context() as patch:
        if user:
            patch.setenv("DISTLEECH_COUCHDB__USERNAME", user)
            patch.setenv("DISTLEECH_COUCHDB__PASSWORD", password or "")
        yield


@pytest.fixture(scope="session")
def couch_url(tmp_path_factory: pytest.TempPathFactory):
    """One server per run: starting it takes a second, a database is cheap."""
    if url := os.environ.get("TEST_COUCHDB_URL"):  # an already-running server (CouchDB 3.x)
        yield url.rstrip("/")
    else:
        with running(tmp_path_factory.mktemp("couch")) as url:
            yield url


@pytest.fixture
def couch_server(couch_url):
    wait_until_up(couch_url)
    return CouchServer(
        couch_url,
        username=os.environ.get("TEST_COUCHDB_USER", ""),
        password=os.environ.get("TEST_COUCHDB_PASSWORD", ""),
    )


@pytest.fixture
def db(couch_server):
    """A fresh, uniquely named database per test, with design docs synced."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    database = couch_server.create_database(name)
    init_database(database, warm=False)
    yield database
    delete_with_companions(couch_server, name)


def delete_with_companions(server: CouchServer, name: str) -> None:
    """Delete a read model with its log, credentials and tracker swarms."""
    server.delete_database(name)
    for companion in ("events", "secrets", "peers"):
        if server.database_exists(f"{name}_{companion}"):
            server.delete_database(f"{name}_{companion}")


@pytest.fixture(scope="session")
def second_couch_url(tmp_path_factory: pytest.TempPathFactory):
    """Another site's server: replication between sites crosses servers."""
    with running(tmp_path_factory.mktemp("couch-second")) as url:
        yield url


@pytest.fixture(scope="session")
def third_couch_url(tmp_path_factory: pytest.TempPathFactory):
    """A third site's server, started by the first test that needs one."""
    with running(tmp_path_factory.mktemp("couch-third")) as url:
        yield url


@pytest.fixture
def make_site(couch_server):
    """Make sites: `make_site("beta", url)` is a fresh read model with its log and
    secrets on the server at `url` (default: the session server), whose events
    record site "beta"; each is deleted with its companions after the test."""
    made: list[Database] = []

    def factory(site: str, url: str | None = None, *, username="", password="") -> Database:
        server = (
            couch_server if url is None else CouchServer(url, username=username, password=password)
        )
        database = Database(server, f"test_{site}_{uuid.uuid4().hex[:12]}", site=site)
        server.create_database(database.name)
        init_database(database, warm=False)
        made.append(database)
        return database

    yield factory
    for database in made:
        # a server that a test stopped (and never started again) takes its data dir along
        with contextlib.suppress(CouchUnavailableError):
            delete_with_companions(database.server, database.name)


@pytest.fixture
def alpha(make_site):
    """Site alpha: a fresh read model and log on the session server."""
    return make_site("alpha")


@pytest.fixture
def beta(make_site, second_couch_url):
    """Site beta, on a second server."""
    return make_site("beta", second_couch_url)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_app(db, clock):
    def factory(**overrides):
        config = {
            "couchdb": {"url": db.server_url, "database": db.name},
            "scheduler": {"enabled": False},
        }
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        return create_app(config, clock=clock)

    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def worker_token(db, clock):
    return issue_token(db, "worker-1", "worker", actor="test", now=clock())


@pytest.fixture
def queuer_token(db, clock):
    return issue_token(db, "queuer-1", "queuer", actor="test", now=clock())


@pytest.fixture
def admin_auth(db, clock):
    add_user(db, "root", "correct horse battery", admin=True, actor="test", now=clock())
    return basic_auth("root", "correct horse battery")


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def token_header(token: str) -> dict[str, str]:
    return {"X-AUTHENTICATION": token}


@pytest.fixture
def worker(worker_token):
    """Headers of a worker."""
    return token_header(worker_token)


def write_csv(path: Path, rows, header=("Artist Name", "Album Title"), bom=False) -> Path:
    import csv

    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path
