"""`distleech run`: start the bundled CouchDB, the app, the scheduler and the tracker.

When couchdb.url names a server, no bundled server is started. Logs go to
var/log/; the bundled server's data to var/couchdb/. Ctrl-C (or SIGTERM)
stops the app, the scheduler and the tracker first (the tracker writes its
swarms behind on the way out), then the database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app import bundled, connect, couch_url
from app.config import Settings
from app.store import init_database

log = logging.getLogger(__name__)
VAR = Path(os.environ.get("DISTLEECH_VAR", Path.cwd() / "var"))


def _spawn(args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    with open(VAR / "log" / log_name, "ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_all(settings: Settings) -> int:
    """Run until Ctrl-C or until a part dies; return the exit status."""
    env = dict(os.environ)
    database = None
    if not settings.couchdb.url:
        port = settings.couchdb.bundled_port
        database = bundled.start(VAR / "couchdb", port)
        env["DISTLEECH_COUCHDB__URL"] = f"http://127.0.0.1:{port}"
        bundled.wait_until_up(env["DISTLEECH_COUCHDB__URL"])
    url = env.get("DISTLEECH_COUCHDB__URL") or couch_url(settings)
    db = connect(_with_url(settings, url), pool_size=4)
    init_database(db, warm=True)
    exe = [sys.executable, "-m", "app.cli"]
    parts = {"app": _spawn(exe + ["serve"], "app.log", env)}
    if settings.scheduler.enabled:
        parts["scheduler"] = _spawn(exe + ["scheduler"], "scheduler.log", env)
    if settings.tracker.enabled:
        parts["tracker"] = _spawn(exe + ["tracker", "serve"], "tracker.log", env)
    _print_banner(settings, url, database is not None)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    status = 0
    while not stopping:
        dead = [name for name, proc in parts.items() if proc.poll() is not None]
        if dead:
            _say(f"{', '.join(dead)} stopped unexpectedly; see {VAR / 'log'}; stopping everything")
            status = 1
            break
        if database is not None and database.poll() is not None:
            _say(f"the bundled CouchDB stopped; see {VAR / 'couchdb' / 'server.log'}")
            status = 1
            break
        time.sleep(0.5)
    _say("stopping…")
    for proc in parts.values():
        bundled.stop(proc)  # the app and the scheduler first: they may still write
    if database is not None:
        bundled.stop(database)
    _say("stopped")
    return status


def _with_url(settings: Settings, url: str) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, couchdb=dataclasses.replace(settings.couchdb, url=url))


def _print_banner(settings: Settings, url: str, bundled_server: bool) -> None:
    app_url = f"http://{settings.server.host}:{settings.server.port}"
    _say(f"distleech app:  {app_url}   (stats: {app_url}/stats)")
    if bundled_server:
        _say(f"CouchDB:        {url} (bundled; Fauxton at {url}/_utils)")
    else:
        _say(f"CouchDB:        {url}")
    if settings.tracker.enabled:
        tracker_url = f"http://{settings.tracker.host.split(',')[0]}:{settings.tracker.port}"
        _say(f"tracker:        {tracker_url}/announce?passkey=<passkey>")
    _say(f"logs:           {VAR / 'log'}")
    _say("first admin:    .venv/bin/distleech user add NAME --admin")
    _say("worker token:   .venv/bin/distleech token add --role worker NAME")
    _say("Ctrl-C stops everything.")
