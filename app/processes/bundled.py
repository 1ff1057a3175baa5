"""Start and stop the bundled CouchDB-compatible server (npm pouchdb-server).

Used by `distleech run` and by the test session. It is started with its
working directory inside the data directory, because it writes config.json
and log.txt to the working directory (see COUCHDB-COMPAT.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]  # the repository: app/<package>/<module>.py
BIN = ROOT / "node_modules" / ".bin" / "pouchdb-server"


class BundledServerError(Exception):
    """The bundled server is not installed or did not come up."""


def die_with_parent() -> Callable[[], None]:
    """A Popen preexec_fn: the child gets SIGTERM when this process dies, even by SIGKILL.

    Without it a crash of `distleech run` (or of a test session) leaves the
    bundled server holding its port, and the next start meets it there. Linux
    only (PR_SET_PDEATHSIG); elsewhere a no-op. Spawn from the main thread:
    the signal follows the thread that forked.
    """
    parent = os.getpid()

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/", timeout=2).ok:  # no /_up on pouchdb-server
                return
        time.sleep(0.1)
    raise BundledServerError(
        f"the bundled CouchDB server at {url} did not answer in {timeout:.0f} s"
    )


def start(data_dir: Path, port: int, *, in_memory: bool = False) -> subprocess.Popen[bytes]:
    """Spawn pouchdb-server on 127.0.0.1:port with its data and log under data_dir."""
    if not BIN.exists():
        raise BundledServerError(f"{BIN} is missing: run `make install` (npm ci) first")
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(BIN),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-color",
        "--config",
        str(data_dir / "config.json"),
    ]
    args += ["--in-memory"] if in_memory else ["--dir", str(data_dir)]
    env = dict(os.environ, NODE_OPTIONS="--unhandled-rejections=warn")
    with open(data_dir / "server.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            args,
            cwd=data_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Run a bundled server for the duration of the block; yield its URL."""
    port = port or free_port()
    process = start(data_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield url
    finally:
        stop(process)


def node_available() -> bool:
    return shutil.which("node") is not None
