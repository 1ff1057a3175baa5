"""Re-make tests/data/legacy_main_fca3f4c.json: a one-database deployment as the old main left it.

Run by hand only, against the code of commit fca3f4c (the last one-database
layout), never by pytest (the file name does not start with `test_`, and
nothing imports it). The migration test loads the JSON this writes, so the
migration is proved on documents made by the old code itself, not by an
imitation of them:

    git worktree add /tmp/legacy-main fca3f4c
    ln -s "$PWD/node_modules" /tmp/legacy-main/node_modules
    cd /tmp/legacy-main
    PYTHONPATH=/tmp/legacy-main DISTLEECH_CONFIG=/nonexistent.yaml <repo>/.venv/bin/python \\
        <repo>/tests/data/make_legacy_fixture.py <repo>/tests/data/legacy_main_fca3f4c.json

It starts a bundled pouchdb-server in a temporary directory, drives the old
app through its HTTP API (Flask test client, a hand-moved clock) and its
account functions, and dumps every document (design docs included, `_rev`
dropped, `_local` skipped). The plaintext passwords, tokens and passkeys it
made are written under "credentials" so the test can log in after the
migration: they are test data, used nowhere else.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PTH, OPS = "https://redacted.ch/", "https://orpheus.network/"
PASSWORDS = {"alice": "alice-first-pass", "bob": "bob's password"}
ALICE_NEW_PASSWORD = "alice-second-pass"
PASSKEYS = {7: "abcdefghijklmnop1234", 8: "ZYXWVUTSRQPONMLK9876"}
IH1, IH2 = "1" * 40, "ab" * 20


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def csv_rows() -> bytes:
    """~30 albums, with commas, ':' and non-ASCII in names, and one rejected row."""
    rows = ["Artist Name,Album Title"]
    rows += [f'"Cockburn, Bruce",Album {i:02d}' for i in range(20)]
    rows += [
        "Björk,Homogenic",
        "Sigur Rós,Ágætis byrjun",
        "Motörhead,Ace of Spades",
        "Wu-Tang Clan,Enter the Wu-Tang: 36 Chambers",
        "Godspeed You! Black Emperor,F♯ A♯ ∞",
        "坂本龍一,音楽図鑑",
        "The The,Soul Mining: Remastered",
        "Fela Kuti,Zombie",
        "Aphex Twin,Selected Ambient Works 85:92",
        "Café Tacvba,Re",
        ",No Artist",
    ]
    return ("\n".join(rows) + "\n").encode("utf-8")


def make(db: Any, clock: Clock) -> dict[str, Any]:
    """Drive the old code; return the credentials it handed out."""
    from app import create_app
    from app.auth import add_user, change_password, issue_token, revoke_token
    from app.tracker import accounts
    from scheduler import jobs

    now = clock
    add_user(db, "root", "root-admin-pass", admin=True, actor="fixture", now=now())
    add_user(db, "alice", PASSWORDS["alice"], admin=False, actor="fixture", now=now())
    add_user(db, "bob", PASSWORDS["bob"], admin=False, actor="fixture", now=now())
    clock.advance(minutes=1)
    change_password(db, "alice", ALICE_NEW_PASSWORD, actor="cli:alice", now=now())
    worker_token = issue_token(db, "seedbox-1", "worker", actor="fixture", now=now())
    queuer_token = issue_token(db, "queuer-1", "queuer", actor="fixture", now=now())
    revoked_token = issue_token(db, "old-worker", "worker", actor="fixture", now=now())
    revoke_token(db, "old-worker", actor="fixture", now=now())

    app = create_app(
        {
            "couchdb": {"url": db.server_url, "database": db.name},
            "scheduler": {"enabled": False},
            "leases": {"buffer_seconds": 0.000001},
        },
        clock=clock,
    )
    client = app.test_client()
    admin = basic("root", "root-admin-pass")
    worker = {"X-AUTHENTICATION": worker_token}
    queuer = {"X-AUTHENTICATION": queuer_token}

    def ok(response: Any, *codes: int) -> Any:
        assert response.status_code in (codes or (200, 201)), response.get_data(as_text=True)
        return response.get_json()

    clock.advance(minutes=1)
    ok(
        client.post(
            "/api/admin/import-csv",
            data=csv_rows(),
            headers={**admin, "Content-Type": "text/csv"},
        )
    )
    clock.advance(minutes=1)
    albums = ok(client.get("/metadata/6", headers=worker))["albums"]
    found, not_found = albums[:2], albums[2:4]  # albums[4:] stay leased
    clock.advance(minutes=5)
    submit = {str(found[0]["id"]): [{"site": PTH, "torrentId": 37}]}
    submit[str(found[1]["id"])] = [{"site": OPS, "torrentId": 4242}, {"site": PTH, "torrentId": 38}]
    submit.update({str(a["id"]): [] for a in not_found})
    ok(client.post("/metadata/submit", json=submit, headers=worker))
    clock.advance(minutes=1)
    tasks = ok(client.post("/torrents", data={"site": PTH, "rows": "1"}, headers=worker))
    clock.advance(minutes=10)
    [task] = tasks["torrents"]
    ok(
        client.put(
            "/torrents/submit",
            json={
                "/ingest/Cockburn, Bruce - Album": [
                    {"site": PTH, "torrentId": task["siteTorrentId"]}
                ]
            },
            headers=worker,
        )
    )
    clock.advance(minutes=1)
    ok(
        client.post(
            "/api/worker/queue",
            data={"url": "https://example.org/a%20page?x=1&y=é", "mode": "1"},
            headers=queuer,
        )
    )
    ok(client.post("/api/worker/queue", data={"url": "https://example.org/b"}, headers=queuer))
    ok(
        client.post(
            "/api/worker/heartbeat", data={"name": "seedbox-1", "status": "idle"}, headers=worker
        )
    )
    ok(client.get("/api/worker/next", headers=worker))  # one URL stays leased
    clock.advance(minutes=1)
    ok(
        client.post(
            "/api/torrents",
            json={
                "site": OPS,
                "gazelle": {
                    "group": {
                        "id": 9,
                        "name": "Homogenic",
                        "year": 1997,
                        "musicInfo": {"artists": [{"id": 1, "name": "Björk"}]},
                    },
                    "torrent": {
                        "id": 4242,
                        "infoHash": IH2.upper(),
                        "media": "CD",
                        "format": "FLAC",
                        "encoding": "Lossless",
                        "fileList": "01 Hunter.flac{{{1000}}}|||02 J&oacute;ga.flac{{{2000}}}",
                        "filePath": "Björk - Homogenic",
                    },
                },
            },
            headers=worker,
        )
    )
    clock.advance(minutes=1)
    for user_id, passkey in PASSKEYS.items():
        ok(
            client.post(
                "/api/user",
                json={
                    "user_id": user_id,
                    "passkey": passkey,
                    "can_leech": True,
                    "name": f"member {user_id}",
                },
                headers=admin,
            )
        )
    ok(client.patch("/api/user/8", json={"can_leech": False}, headers=admin))
    ok(
        client.post(
            "/api/torrent",
            json={"info_hash": IH1, "torrent_id": 11, "name": "Zombie"},
            headers=admin,
        )
    )
    for prefix, name in (
        ("-qB4", "qBittorrent"),
        ("-TR:3", "Transmission (colon)"),
        ("-DE", "Deluge"),
    ):
        ok(client.post("/api/whitelist", json={"prefix": prefix, "client": name}, headers=admin))
    ok(client.delete("/api/whitelist/-DE", headers=admin))
    ok(
        client.put(
            "/api/cache/torrent", json={"site": PTH, "key": "37", "value": {"x": 1}}, headers=worker
        )
    )
    jobs.snapshot_stats(db, clock())
    del accounts  # imported for its projectors (the API registers them too)
    return {
        "users": {"root": "root-admin-pass", "alice": ALICE_NEW_PASSWORD, "bob": PASSWORDS["bob"]},
        "old_passwords": {"alice": PASSWORDS["alice"]},
        "admins": ["root"],
        "tokens": {"seedbox-1": worker_token, "queuer-1": queuer_token},
        "revoked_tokens": {"old-worker": revoked_token},
        "passkeys": {str(k): v for k, v in PASSKEYS.items()},
    }


def dump(db: Any) -> list[dict[str, Any]]:
    rows = db.server.get_json(f"{db.path}/_all_docs", include_docs=True)["rows"]
    docs = []
    for row in rows:
        if row["id"].startswith("_local/"):
            continue
        doc = dict(row["doc"])
        doc.pop("_rev", None)
        docs.append(doc)
    return docs


def main(out: Path) -> None:
    import app
    from app.bundled import running
    from app.couch import CouchServer

    here = Path(app.__file__).resolve().parent.parent
    sys.stderr.write(f"legacy code from {here}\n")
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp)) as url:
        from app.store import init_database

        db = CouchServer(url).create_database("legacy")
        init_database(db, warm=False)
        credentials = make(db, Clock())
        docs = dump(db)
    fixture = {
        "made_by": "tests/data/make_legacy_fixture.py at commit fca3f4c",
        "credentials": credentials,
        "docs": docs,
    }
    out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stderr.write(f"{len(docs)} documents -> {out}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
