"""A private RabbitMQ for the test session (pytest plugin, listed in conftest.py).

Debian's rabbitmq-server (`make test` installs it as root) is started as the
current user from /usr/lib/rabbitmq/bin (not the /usr/sbin wrapper, which
switches to the rabbitmq user): its own node name @localhost, its own
mnesia, log and config files in a tmp dir, a free AMQP port, a free Erlang
distribution port and its own epmd on a free port (ERL_EPMD_PORT) that the
fixture starts and stops, so nothing outlives the session and nothing meets
a system broker. Both are started in sessions of their own with
bundled.die_with_parent (SIGTERM when the test process dies, even by SIGKILL)
and their process groups are killed at exit: nothing of them (beam, epmd)
outlives the session or keeps its network namespace alive. The suite runs
inside `unshare --net` with only loopback: all of this is loopback.
`restart()` stops and starts the same node (durable queues and persistent
messages survive, as in a real restart).

Not root and rabbitmq-server missing: the tests that need it skip, saying
why. Root and missing: they fail (CI is root; nothing may skip there).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
import pika.exceptions
import pytest

from app.processes.bundled import die_with_parent

RABBIT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/sbin", "/sbin")
START_SECONDS = 90.0
STOP_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_tool(name: str) -> str | None:
    """The RabbitMQ script itself (not the user-switching wrapper), else one on PATH."""
    for directory in RABBIT_DIRS:
        path = Path(directory) / name
        if path.exists():
            return str(path)
    return shutil.which(name)


def parent_death_hook() -> Callable[[], None] | None:
    """bundled.die_with_parent when spawning from the main thread, else None.

    The parent-death signal follows the thread that forked: a node restarted
    from a test's worker thread (the broker-restart test restarts it from
    the bridge's thread) would be stopped when that thread ends. Such a node
    is still killed at exit (kill_group); the session's first start is always
    from the main thread.
    """
    if threading.current_thread() is threading.main_thread():
        return die_with_parent()
    return None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child's whole process group (its own session), unless it has been reaped.

    At interpreter exit, after an interrupted or failed session: what a clean
    close() stopped is gone already; anything left (beam's helpers, epmd) goes.
    """
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        proc.wait(timeout=10)


class RabbitMQ:
    """One private broker node: start, stop, restart, rabbitmqctl, connection parameters."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.node = f"distleech-test-{uuid.uuid4().hex[:8]}@localhost"
        self.username = "distleech-test"
        self.password = f"pw-{secrets.token_hex(12)}"  # tests assert it is never printed
        self.server = find_tool("rabbitmq-server") or "rabbitmq-server"
        self.ctl_path = find_tool("rabbitmqctl") or "rabbitmqctl"
        self.env = self._environment()
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def url(self) -> str:
        """The broker URL without credentials (as amqp.url must be)."""
        return f"amqp://127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        for name in ("home", "mnesia", "log"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"default_user = {self.username}\n"
            f"default_pass = {self.password}\n"
            "default_permissions.configure = .*\n"
            "default_permissions.read = .*\n"
            "default_permissions.write = .*\n"
            "disk_free_limit.absolute = 10MB\n"
        )
        env = dict(os.environ)
        env.update(
            HOME=str(self.base / "home"),  # the Erlang cookie lives there
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
        )
        return env

    def parameters(self) -> pika.ConnectionParameters:
        return pika.ConnectionParameters(
            host="127.0.0.1",
            port=self.port,
            credentials=pika.PlainCredentials(self.username, self.password),
            connection_attempts=1,
            socket_timeout=5,
        )

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.parameters())

    def start(self) -> None:
        """Start the node and wait until it takes AMQP connections (the last step of boot)."""
        began = time.monotonic()
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port)],
                env=self.env,
                start_new_session=True,
                preexec_fn=parent_death_hook(),
            )
            atexit.register(kill_group, self.epmd)
        with open(self.base / "server.out", "ab") as out:
            self.proc = subprocess.Popen(
                [self.server],
                env=self.env,
                cwd=self.base,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_hook(),  # the script traps SIGTERM, stops the VM
            )
        atexit.register(kill_group, self.proc)
        self._wait_until_up(began + START_SECONDS)
        self.started_in = time.monotonic() - began

    def _wait_until_up(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}: {self._tail()}")
            try:
                self.connect().close()
                return
            except pika.exceptions.AMQPError:
                time.sleep(0.2)
        raise RuntimeError(f"rabbitmq-server did not come up: {self._tail()}")

    def _tail(self) -> str:
        text = (self.base / "server.out").read_text(errors="replace")
        return text[-3000:]

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node; its output."""
        done = subprocess.run(
            [self.ctl_path, "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STOP_SECONDS,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        """Stop the node (rabbitmqctl stop; a signal if that fails) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop")
            self.proc.wait(timeout=STOP_SECONDS)
        except (subprocess.SubprocessError, OSError):
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> None:
        """Stop and start the same node: durable queues and persistent messages survive."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the node and its epmd (the fixture's end)."""
        self.stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory):
    """A private broker for the session; see the module docstring."""
    if find_tool("rabbitmq-server") is None or shutil.which("epmd") is None:
        reason = "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
        if os.geteuid() == 0:
            pytest.fail(f"{reason}; `make test` installs it as root, and CI must not skip")
        pytest.skip(reason)
    broker = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL)  # every refused connect while waiting, at length
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
        pika_log.setLevel(level)
