"""`distleech run` (what `make run` calls): everything starts, answers, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from app.processes.bundled import free_port


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_run_starts_bundled_couchdb_app_and_scheduler_and_stops_on_ctrl_c(tmp_path):
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
    try:
        response = _wait_for(f"http://127.0.0.1:{app_port}/metadata/1", process)
        assert response.status_code == 401
        assert response.json()["error"] == "authentication_required"
        # the bundled server serves Fauxton and keeps its data under var/
        assert requests.get(f"http://127.0.0.1:{couch_port}/_utils/", timeout=5).ok
        assert (tmp_path / "var" / "couchdb").is_dir()
        assert (tmp_path / "var" / "log" / "scheduler.log").exists()
        # the tracker answers announces (with a reason: this passkey is nobody's)
        announce = _wait_for(f"http://127.0.0.1:{tracker_port}/announce?passkey=x", process)
        assert b"failure reason" in announce.content
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{app_port}" in output
    assert "distleech user add" in output
    # nothing listens any more
    assert f"http://127.0.0.1:{tracker_port}/announce" in output
    for port in (couch_port, app_port, tracker_port):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        except requests.ConnectionError:
            continue
        raise AssertionError(f"port {port} still answers after Ctrl-C")
