"""`distleech run`: start the bundled CouchDB, the app, the scheduler and the tracker
(and the AMQP bridge when amqp.enabled is true).

When couchdb.url names a server, no bundled server is started. Logs go to
var/log/; the bundled server's data to var/couchdb/. Ctrl-C (or SIGTERM)
stops the app, the scheduler and the tracker first (the tracker writes its
swarms behind on the way out), then the database.

Start-up never waits for indexes: they are warmed in the background, each
view logged as it starts and when it is warm, while the app already serves.
The app, the scheduler, the tracker and the bundled CouchDB are the site: when
one of them dies, everything stops (say so, exit 1). The AMQP bridge is an
optional part (OPTIONAL): when it exits, the others keep running and it is
started again after a backoff (Restarter: 1 s doubling up to a minute, back
to 1 s once it ran a minute), so a broker or a bug in the bridge never takes
the site down. An invalid `amqp` section fails before anything starts.

No child outlives the supervisor: each gets SIGTERM when it dies, even by
SIGKILL (bundled.die_with_parent), and var/run.json names what a crashed run
left behind so that the next start can stop it or say plainly what is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from app import connect, couch_url
from app.config import Settings
from app.errors import redact_credentials
from app.processes import bundled
from app.store.couch import CouchUnavailableError, Database
from app.store.designdocs import Warming, design_doc_targets
from app.store.setup import init_database
from app.tracker.peersdb import init_peers_database

VAR = Path(os.environ.get("DISTLEECH_VAR", Path.cwd() / "var"))
CHILD_MARKS = {"couchdb": "pouchdb-server", "app": "app.cli", "scheduler": "app.cli"}
OPTIONAL = frozenset({"amqp"})  # parts restarted when they exit; the others stop everything
Spawner = Callable[[], subprocess.Popen[bytes]]


def _spawn(args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    with open(VAR / "log" / log_name, "ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=bundled.die_with_parent(),
        )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Stop:
    """Set by SIGINT/SIGTERM; checked by every loop of the supervisor."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def _handler(signum: int, frame: FrameType | None) -> None:
            cls.requested = True

        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


def run_all(settings: Settings) -> int:
    """Run until Ctrl-C or until a part dies; return the exit status."""
    _check_amqp_settings(settings)
    _Stop.install()
    _stop_what_a_crashed_run_left()
    _check_ports_free(settings)
    env = dict(os.environ)
    children: dict[str, subprocess.Popen[bytes]] = {}
    optional: dict[str, Spawner] = {}
    warming: Warming | None = None
    try:
        if not settings.couchdb.url:
            port = settings.couchdb.bundled_port
            children["couchdb"] = bundled.start(VAR / "couchdb", port)
            _write_run_file(children)
            env["DISTLEECH_COUCHDB__URL"] = f"http://127.0.0.1:{port}"
            bundled.wait_until_up(env["DISTLEECH_COUCHDB__URL"])
        url = env.get("DISTLEECH_COUCHDB__URL") or couch_url(settings)
        db = connect(_with_url(settings, url), pool_size=4)
        if not _init_until_ready(db, url, settings):
            return 0
        exe = [sys.executable, "-m", "app.cli"]
        children["app"] = _spawn(exe + ["serve"], "app.log", env)
        if settings.scheduler.enabled:
            children["scheduler"] = _spawn(exe + ["scheduler"], "scheduler.log", env)
        if settings.tracker.enabled:
            children["tracker"] = _spawn(exe + ["tracker", "serve"], "tracker.log", env)
        if settings.amqp.enabled:  # off by default; a down broker never blocks the others
            optional["amqp"] = lambda: _spawn(exe + ["amqp", "bridge"], "amqp.log", env)
            children["amqp"] = optional["amqp"]()
        _write_run_file(children)
        _print_banner(settings, url, "couchdb" in children)
        warming = Warming(design_doc_targets(db), say=_say, record=db).start()
        return _watch(children, optional)
    finally:
        if warming is not None:
            warming.cancel()
        _say("stopping…")
        for proc in reversed(list(children.values())):  # the database last
            bundled.stop(proc)
        with contextlib.suppress(FileNotFoundError):
            (VAR / "run.json").unlink()
        _say("stopped")


def _init_until_ready(db: Database, url: str, settings: Settings) -> bool:
    """Create the databases and sync design docs; wait (saying so) while CouchDB is busy.

    A server busy building a big index may not answer for minutes: that is
    no reason to give up, and Ctrl-C still stops. False when stopped first.
    """
    shown = redact_credentials(url, settings.couchdb.password)
    while not _Stop.requested:
        try:
            init_database(db, warm=False)
            init_peers_database(db.companion("peers"))  # warmed with the others
            return True
        except CouchUnavailableError as exc:
            _say(f"CouchDB at {shown} did not answer ({exc.reason}); trying again in 5 s")
            for _ in range(50):
                if _Stop.requested:
                    break
                time.sleep(0.1)
    return False


def _check_amqp_settings(settings: Settings) -> None:
    """Refuse a bad `amqp` section before anything starts (the bridge would only
    exit on it again and again, restarted each time)."""
    if not settings.amqp.enabled:
        return
    from app.amqp.bridge import check_settings  # pika only when the bridge is on
    from app.config import ConfigError

    try:
        check_settings(settings.amqp)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@dataclasses.dataclass
class Restarter:
    """When to start an optional part again: a wait doubling from `first` up to `most`,
    back to `first` once the part ran `steady` seconds (a crash loop waits longer and
    longer; a rare exit is met at once)."""

    first: float = 1.0
    most: float = 60.0
    steady: float = 60.0
    started_at: float = 0.0
    due_at: float | None = None
    wait: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.wait = self.first

    def exited(self, now: float) -> float:
        """Note an exit at `now`; the seconds until the restart."""
        if now - self.started_at >= self.steady:
            self.wait = self.first
        self.due_at = now + self.wait
        self.wait = min(self.most, self.wait * 2)
        return self.due_at - now

    def is_due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def started(self, now: float) -> None:
        self.started_at, self.due_at = now, None


def watch_step(
    children: dict[str, subprocess.Popen[bytes]],
    optional: dict[str, Spawner],
    restarters: dict[str, Restarter],
    now: float,
) -> int | None:
    """One look at the children: an exit status to stop with, or None to go on.

    A required part that died stops everything (1). An optional part that
    exited is started again by its spawner once its Restarter says so.
    """
    dead = [name for name, proc in children.items() if proc.poll() is not None]
    if "couchdb" in dead:
        _say(f"the bundled CouchDB stopped; see {VAR / 'couchdb' / 'server.log'}")
        return 1
    required = [name for name in dead if name not in optional]
    if required:
        _say(f"{', '.join(required)} stopped unexpectedly; see {VAR / 'log'}; stopping everything")
        return 1
    for name in dead:
        _restart_when_due(name, children, optional[name], restarters, now)
    return None


def _restart_when_due(
    name: str,
    children: dict[str, subprocess.Popen[bytes]],
    spawn: Spawner,
    restarters: dict[str, Restarter],
    now: float,
) -> None:
    restarter = restarters.setdefault(name, Restarter(started_at=now))
    if restarter.due_at is None:
        wait = restarter.exited(now)
        code = children[name].returncode
        _say(f"{name} exited ({code}); see {VAR / 'log'}; starting it again in {wait:.0f} s")
    elif restarter.is_due(now):
        children[name] = spawn()
        restarter.started(now)
        _write_run_file(children)


def _watch(children: dict[str, subprocess.Popen[bytes]], optional: dict[str, Spawner]) -> int:
    restarters = {name: Restarter(started_at=time.monotonic()) for name in optional}
    while not _Stop.requested:
        stopped = watch_step(children, optional, restarters, time.monotonic())
        if stopped is not None:
            return stopped
        time.sleep(0.5)
    return 0


def _with_url(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, couchdb=dataclasses.replace(settings.couchdb, url=url))


# ---------------------------------------------------------------- what a crashed run left


def _write_run_file(children: dict[str, subprocess.Popen[bytes]]) -> None:
    VAR.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "children": {name: p.pid for name, p in children.items()}}
    (VAR / "run.json").write_text(json.dumps(state), encoding="utf-8")


def _cmdline(pid: int) -> str:
    """The command line of a live process, "" if it is gone (or not ours to see)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stop_what_a_crashed_run_left() -> None:
    """Refuse to start beside a running supervisor; stop the children of a dead one."""
    path = VAR / "run.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    pid = int(state.get("pid", 0))
    command = _cmdline(pid).split() if pid and pid != os.getpid() else []
    if "run" in command and any("app.cli" in part or "distleech" in part for part in command):
        raise click.ClickException(
            f"already_running: distleech run is running with {VAR} (pid {pid}):"
            f" stop it with Ctrl-C in its terminal or `kill {pid}`, or give this one"
            " its own DISTLEECH_VAR and ports."
        )
    for name, child in (state.get("children") or {}).items():
        mark = CHILD_MARKS.get(name, "app.cli")
        if mark in _cmdline(int(child)):
            _say(f"stopping the {name} (pid {child}) that an earlier run left behind")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGTERM)
            _wait_gone(int(child))
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie has released its ports; it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.1)


def _check_ports_free(settings: Settings) -> None:
    """Say plainly which port is taken, before anything starts and fails on it."""
    wanted = [("server.port", settings.server.host, settings.server.port)]
    if not settings.couchdb.url:
        wanted.append(("couchdb.bundled_port", "127.0.0.1", settings.couchdb.bundled_port))
    if settings.tracker.enabled:
        for host in settings.tracker.host.split(","):
            wanted.append(("tracker.port", host.strip(), settings.tracker.port))
    for key, host, port in wanted:
        if _port_taken(host, port):
            env = "DISTLEECH_" + key.upper().replace(".", "__")
            raise click.ClickException(
                f"port_in_use: {host}:{port} ({key}) is in use by another program."
                f" Stop that program, or choose another port with {env}=<port>."
            )


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _print_banner(settings: Settings, url: str, bundled_server: bool) -> None:
    """Where everything is; the CouchDB URL without its credentials (never printed)."""
    shown = redact_credentials(url, settings.couchdb.password)
    app_url = f"http://{settings.server.host}:{settings.server.port}"
    _say(f"distleech app:  {app_url}   (web UI: log in there; stats: {app_url}/stats)")
    if bundled_server:
        _say(f"CouchDB:        {shown} (bundled; Fauxton at {shown}/_utils)")
    else:
        _say(f"CouchDB:        {shown}")
    if settings.tracker.enabled:
        tracker_url = f"http://{settings.tracker.host.split(',')[0]}:{settings.tracker.port}"
        _say(f"tracker:        {tracker_url}/announce?passkey=<passkey>")
    if settings.amqp.enabled:
        amqp_url = redact_credentials(settings.amqp.url, settings.amqp.password)
        _say(f"AMQP bridge:    {amqp_url} (http_downloader's queues; log: amqp.log)")
    _say(f"logs:           {VAR / 'log'}")
    _say("first admin:    .venv/bin/distleech user add NAME --admin")
    _say("invite someone: .venv/bin/distleech invite create   (prints their registration link)")
    _say("worker token:   .venv/bin/distleech token add --role worker NAME")
    _say("indexes:        warming in the background (below); the app serves meanwhile")
    _say("Ctrl-C stops everything.")
