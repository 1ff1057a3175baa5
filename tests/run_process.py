"""`distleech run` (what `make run` calls) as a real subprocess on free ports."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from app.processes.bundled import free_port


@dataclasses.dataclass
class Running:
    """The running processes, their ports, and the environment a CLI call needs to reach them."""

    process: subprocess.Popen
    env: dict[str, str]
    couch_port: int
    app_port: int
    tracker_port: int
    output: str = ""

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def wait_for(self, url: str, timeout: float = 60) -> requests.Response:
        """GET url once something answers there; fail if `run` exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                self.process.stdout.read() if self.process.stdout else ""
            )
            try:
                return requests.get(url, timeout=2)
            except requests.ConnectionError:
                time.sleep(0.2)
        raise AssertionError(f"{url} never answered")

    def cli(self, *args: str, stdin: str = "") -> str:
        """Run a `distleech` command against this run's database; return what it printed."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@contextlib.contextmanager
def distleech_run(tmp_path: Path) -> Iterator[Running]:
    """Start `distleech run` with the bundled server, one web worker and the tracker; Ctrl-C
    it at the end (its output is then in `.output`)."""
    couch_port, app_port, tracker_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        DISTLEECH_VAR=str(tmp_path / "var"),
        DISTLEECH_CONFIG=str(tmp_path / "absent.yaml"),
        DISTLEECH_COUCHDB__BUNDLED_PORT=str(couch_port),
        DISTLEECH_SERVER__PORT=str(app_port),
        DISTLEECH_SERVER__WORKERS="1",
        DISTLEECH_TRACKER__PORT=str(tracker_port),
    )
    env.pop("DISTLEECH_COUCHDB__URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Running(process, env, couch_port, app_port, tracker_port)
    try:
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        running.output, _ = process.communicate(timeout=60)
