"""`distleech tracker serve` as a real subprocess on a test database, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import bencode2
import requests


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    """Poll until check() is truthy; fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class TrackerProcess:
    """A running tracker; `announce`/`scrape` send raw queries and decode the bencoded reply."""

    def __init__(self, db: Any, workdir: Path, **settings: Any) -> None:
        self.db, self.port = db, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"tracker-{self.port}.log"
        self.env = {
            **os.environ,
            "DISTLEECH_COUCHDB__URL": db.server_url,
            "DISTLEECH_COUCHDB__DATABASE": db.name,
            "DISTLEECH_TRACKER__PORT": str(self.port),
            "DISTLEECH_TRACKER__FLUSH_SECONDS": "0.1",
        } | {f"DISTLEECH_TRACKER__{k.upper()}": str(v) for k, v in settings.items()}
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        distleech = Path(sys.executable).with_name("distleech")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(distleech), "tracker", "serve"], env=self.env, stdout=out, stderr=out
            )
        wait_for(self._up, 30, "the tracker to listen")

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the tracker exited:\n{self.log.read_text()[-3000:]}")
        try:
            return requests.get(self.base + "/", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM is a clean shutdown (everything written behind); SIGKILL a crash."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def get(self, target: str) -> dict[bytes, Any]:
        response = requests.get(self.base + target, timeout=5)
        assert response.status_code == 200, response.text
        reply: dict[bytes, Any] = bencode2.bdecode(response.content)
        return reply

    def announce(self, info_hash: str, peer_id: bytes, passkey: str, **params: Any) -> dict:
        query = {
            "info_hash": quote_from_bytes(bytes.fromhex(info_hash)),
            "peer_id": quote_from_bytes(peer_id),
            "port": 6881,
            "uploaded": 0,
            "downloaded": 0,
            "left": 0,
            "compact": 1,
            "passkey": passkey,
        } | params
        return self.get("/announce?" + "&".join(f"{k}={v}" for k, v in query.items()))

    def scrape(self, passkey: str, *info_hashes: str) -> dict:
        hashes = [f"info_hash={quote_from_bytes(bytes.fromhex(h))}" for h in info_hashes]
        return self.get("/scrape?" + "&".join([*hashes, f"passkey={passkey}"]))
