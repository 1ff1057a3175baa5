"""`distleech run` (what `make run` calls): everything starts, answers, and stops on Ctrl-C."""

from __future__ import annotations

import requests
from run_process import distleech_run


def test_run_starts_bundled_couchdb_app_and_scheduler_and_stops_on_ctrl_c(tmp_path):
    with distleech_run(tmp_path) as run:
        response = run.wait_for(f"{run.app_url}/metadata/1")
        assert response.status_code == 401
        assert response.json()["error"] == "authentication_required"
        # the bundled server serves Fauxton and keeps its data under var/
        assert requests.get(f"http://127.0.0.1:{run.couch_port}/_utils/", timeout=5).ok
        assert (tmp_path / "var" / "couchdb").is_dir()
        assert (tmp_path / "var" / "log" / "scheduler.log").exists()
        # the tracker answers announces (with a reason: this passkey is nobody's)
        announce = run.wait_for(f"http://127.0.0.1:{run.tracker_port}/announce?passkey=x")
        assert b"failure reason" in announce.content
    output = run.output
    assert run.process.returncode == 0, output
    assert run.app_url in output
    assert "distleech user add" in output
    # nothing listens any more
    assert f"http://127.0.0.1:{run.tracker_port}/announce" in output
    for port in (run.couch_port, run.app_port, run.tracker_port):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        except requests.ConnectionError:
            continue
        raise AssertionError(f"port {port} still answers after Ctrl-C")
