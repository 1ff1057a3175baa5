"""`distleech run` start-up: it never dies on indexes, leaves no process behind,
clears what a crashed run left, says plainly when a port is taken, and never
prints a credential."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.processes import bundled
from app.processes.bundled import free_port

SECRET = "s3cret-admin-pw"


def run_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        DISTLEECH_VAR=str(tmp_path / "var"),
        DISTLEECH_CONFIG=str(tmp_path / "absent.yaml"),
        DISTLEECH_COUCHDB__BUNDLED_PORT=str(free_port()),
        DISTLEECH_SERVER__PORT=str(free_port()),
        DISTLEECH_SERVER__WORKERS="1",
        DISTLEECH_TRACKER__PORT=str(free_port()),
        **extra,
    )
    if "DISTLEECH_COUCHDB__URL" not in extra:
        env.pop("DISTLEECH_COUCHDB__URL", None)
    return env


def start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_json(url: str, process: subprocess.Popen[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            return requests.get(url, headers={"Accept": "application/json"}, timeout=5).json()
        except (requests.ConnectionError, ValueError):
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


def answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def wait_all_closed(ports: list[int], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(answers(port) for port in ports):
            return
        time.sleep(0.5)
    raise AssertionError(f"still answering: {[p for p in ports if answers(p)]}")


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def ports_of(env: dict[str, str]) -> list[int]:
    keys = ("COUCHDB__BUNDLED_PORT", "SERVER__PORT", "TRACKER__PORT")
    return [int(env[f"DISTLEECH_{key}"]) for key in keys]


def test_a_crashed_run_leaves_nothing_and_its_leftovers_are_cleared(tmp_path):
    env = run_env(tmp_path)
    couch_port, app_port, tracker_port = ports_of(env)
    # what an earlier run that crashed before this fix left: its bundled server on the port
    leftover = bundled.start(tmp_path / "old-couchdb", couch_port)
    bundled.wait_until_up(f"http://127.0.0.1:{couch_port}")
    (tmp_path / "var").mkdir()
    run_file = {"pid": dead_pid(), "children": {"couchdb": leftover.pid}}
    (tmp_path / "var" / "run.json").write_text(json.dumps(run_file))

    process = start_run(env)
    try:
        stats = wait_for_json(f"http://127.0.0.1:{app_port}/stats", process)
        assert leftover.wait(10) is not None  # stopped by the new run
        # the indexes warm in the background while the app serves, and /stats says how far
        deadline = time.monotonic() + 90
        while stats["indexes"] is None or stats["indexes"]["state"] != "warm":
            assert time.monotonic() < deadline, stats["indexes"]
            time.sleep(0.5)
            stats = wait_for_json(f"http://127.0.0.1:{app_port}/stats", process)
        assert stats["indexes"]["warm"] == stats["indexes"]["total"] > 10
    finally:
        process.kill()  # a crash: no Ctrl-C, no clean-up code runs
        output, _ = process.communicate(timeout=30)
    assert f"stopping the couchdb (pid {leftover.pid}) that an earlier run left behind" in output
    assert "warming distleech/" in output and " warm after " in output
    assert "indexes warm after" in output
    # every child died with it: nothing answers on any port
    wait_all_closed([couch_port, app_port, tracker_port])


def test_a_port_taken_by_another_program_is_named_before_anything_starts(tmp_path):
    env = run_env(tmp_path)
    couch_port, app_port, _ = ports_of(env)
    with socket.socket() as other:
        other.bind(("127.0.0.1", app_port))
        other.listen(1)
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"Error: port_in_use: 127.0.0.1:{app_port} (server.port)" in result.stderr
    assert "DISTLEECH_SERVER__PORT" in result.stderr
    assert not answers(couch_port)  # the bundled server was never started


def test_a_second_run_beside_a_running_one_is_refused(tmp_path):
    env = run_env(tmp_path)
    # a process that looks like a running `python -m app.cli run`
    running = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "app.cli", "run"]
    )
    try:
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "run.json").write_text(json.dumps({"pid": running.pid}))
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        running.kill()
        running.wait()
    assert result.returncode == 1
    assert "Error: already_running: distleech run is running with" in result.stderr
    assert f"kill {running.pid}" in result.stderr


@pytest.fixture
def couch_with_admin(tmp_path):
    """A server of its own whose admin has a password (the shared one stays open)."""
    with bundled.running(tmp_path / "authed") as url:
        requests.put(f"{url}/_config/admins/admin", data=json.dumps(SECRET), timeout=10)
        yield url


def test_no_credential_is_ever_printed(tmp_path, couch_with_admin):
    url = couch_with_admin.replace("http://", f"http://admin:{SECRET}@")
    env = run_env(
        tmp_path,
        DISTLEECH_COUCHDB__URL=url,
        DISTLEECH_COUCHDB__DATABASE="creds",
        DISTLEECH_SCHEDULER__ENABLED="false",
        DISTLEECH_TRACKER__ENABLED="false",
    )
    app_port = int(env["DISTLEECH_SERVER__PORT"])
    process = start_run(env)
    try:
        wait_for_json(f"http://127.0.0.1:{app_port}/stats", process)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "CouchDB:        http://***@127.0.0.1:" in output
    logs = "".join(p.read_text() for p in (tmp_path / "var" / "log").glob("*.log"))
    assert SECRET not in output and SECRET not in logs
    # a wrong password: one line naming the problem, without the password either
    wrong = dict(env, DISTLEECH_COUCHDB__URL=url.replace(SECRET, "not-" + SECRET))
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "stats"], env=wrong, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: database_unauthorized: "), result.stderr
    assert SECRET not in result.stderr and "Traceback" not in result.stderr
