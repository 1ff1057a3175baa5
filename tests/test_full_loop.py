"""The whole loop, with nothing made by hand: inventory CSV -> metadata worker -> download
task -> download worker (real aria2) -> files on the ingest volume -> ingest scan -> task
filled -> reseed lookup. Everything talks over real HTTP; the Gazelle site is the stand-in
of tests/gazelle_stub.py, the only part that cannot be real here."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner
from conftest import write_csv
from factories import album_id_for
from gazelle_stub import (
    ARIA2_MISSING,
    GazelleStub,
    aria2_downloads,
    running_aria2,
    serving,
    with_worker_endpoints,
)
from gazelle_stub import write_release as write_files

from app import create_app
from app.cli.main import main as distleech
from app.queues.albums import album_doc_id
from app.queues.downloads import task_doc_id
from worker.cli import worker as worker_group
from worker.scanner import ingest as ingest_group

WINDOW = "0.4"  # the stub's and the workers' rate-limit window (5 requests per 0.4 s)
HOST = "127.0.0.1"


@pytest.fixture
def live_app(db):
    """The app on the real clock: the CLI's import stamps albums with the real time."""
    return create_app(
        {
            "couchdb": {"url": db.server_url, "database": db.name},
            "scheduler": {"enabled": False},
        }
    )


def couch_env(db):
    """What `distleech import-csv` needs to reach the test's database."""
    env = {"DISTLEECH_COUCHDB__URL": db.server_url, "DISTLEECH_COUCHDB__DATABASE": db.name}
    if os.environ.get("TEST_COUCHDB_USER"):
        env["DISTLEECH_COUCHDB__USERNAME"] = os.environ["TEST_COUCHDB_USER"]
        env["DISTLEECH_COUCHDB__PASSWORD"] = os.environ.get("TEST_COUCHDB_PASSWORD", "")
    return env


def invoke(group, args, env):
    result = CliRunner().invoke(group, args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_full_loop(db, live_app, worker_token, tmp_path):
    if shutil.which("aria2c") is None:
        pytest.skip(ARIA2_MISSING)
    stub = GazelleStub(rate_requests=5, rate_window=float(WINDOW))
    group = stub.add_group("Bruce Cockburn", "Life Short Call Now")
    release = write_files(
        tmp_path / "site" / "Bruce Cockburn - Life Short Call Now (2006) [FLAC]",
        {"01 - Life Short Call Now.flac": 60_000, "02 - Mango.flac": 45_000, "cover.jpg": 4_000},
        seed=7,
    )
    cd = stub.add_torrent(group, release, media="CD", has_log=True, log_score=100, has_cue=True)
    mp3_files = write_files(tmp_path / "site" / "LSCN [MP3]", {"01.mp3": 9_000}, seed=8)
    stub.add_torrent(group, mp3_files, format="MP3", encoding="320", media="CD")
    ingest_volume = tmp_path / "ingest"
    ingest_volume.mkdir()

    with (
        serving(stub) as site,
        serving(with_worker_endpoints(live_app)) as server,
        running_aria2(tmp_path / "aria2") as aria2,
    ):
        worker_env = {"DISTLEECH_TOKEN": worker_token, "DISTLEECH_SERVER": server}
        common = ["--site", site, "--rate-window", WINDOW]

        # 1. the operator imports the inventory
        csv = write_csv(
            tmp_path / "inventory.csv",
            [("Cockburn, Bruce", "Life Short Call Now"), ("Cockburn, Bruce", "Not There")],
        )
        assert "2 added" in invoke(distleech, ["import-csv", str(csv)], couch_env(db))

        # 2. the metadata worker finds the album (FLAC CD, 100% log, cue; not the MP3)
        out = invoke(
            worker_group,
            ["metadata", *common],
            {**worker_env, "DISTLEECH_SITE_API_KEY": stub.api_key},
        )
        assert "albums: leased 2, found 1, not found 1, failed 0" in out
        found = db.get(album_doc_id(album_id_for("Cockburn, Bruce", "Life Short Call Now")))
        assert found["torrents"] == [{"site": HOST, "torrentId": cd.id}]

        # 3. ... which made a download task for that site and torrent
        task_id = task_doc_id(HOST, cd.id)
        assert db.get(task_id)["state"] == "ready"

        # 4. the download worker fetches the .torrent (classic URL), registers it, hands it
        #    to aria2, and leaves it there
        site_keys = {
            "DISTLEECH_SITE_AUTHKEY": stub.authkey,
            "DISTLEECH_SITE_TORRENT_PASS": stub.passkey,
            "DISTLEECH_RPC_SECRET": aria2.secret,
        }
        args = ["download", *common, "--client", "aria2", "--rpc", aria2.rpc_url]
        args += ["--download-dir", str(tmp_path / "downloads")]
        out = invoke(worker_group, args, {**worker_env, **site_keys})
        assert "torrents: leased 1, added 1" in out
        assert [d["infoHash"] for d in aria2_downloads(aria2)] == [cd.info_hash.lower()]
        assert db.get(task_id)["info_hash"] == cd.info_hash.lower()
        assert stub.refused == 0

        # 5. the files land on the ingest volume (no peer exists here: copied in)
        landed = ingest_volume / release.name
        shutil.copytree(release, landed)

        # 6. the ingest scan matches and verifies them against the registered .torrent
        scan = ["scan", str(ingest_volume), "--server", server, "--verify"]
        out = invoke(ingest_group, scan, worker_env)
        assert "matched" in out

        # 7. the task is filled with the right path
        task = db.get(task_id)
        assert (task["state"], task["path"]) == ("done", str(landed))

        # 8. the reseed lookup finds where the files live, by info hash and by site
        client = live_app.test_client()
        headers = {"X-AUTHENTICATION": worker_token}
        by_hash = client.get(f"/api/torrents/{cd.info_hash}", headers=headers).get_json()
        assert by_hash["location"]["path"] == str(landed)
        assert by_hash["location"]["verified"]["status"] == "verified"
        assert sorted(f["local_path"] for f in by_hash["files"]) == sorted(
            str(landed / name) for name in os.listdir(release)
        )
        by_site = client.get(f"/api/torrents/by-site/{HOST}/{cd.id}", headers=headers)
        assert by_site.get_json() == by_hash
