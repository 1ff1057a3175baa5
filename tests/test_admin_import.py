"""Inventory import: the admin upload and the `distleech import-csv` command."""

from __future__ import annotations

import io

from click.testing import CliRunner
from conftest import write_csv

from app.cli.main import main


def _upload(client, auth, content: bytes):
    data = {"file": (io.BytesIO(content), "inventory.csv")}
    return client.post(
        "/api/admin/import-csv", data=data, headers=auth, content_type="multipart/form-data"
    )


def test_admin_upload_adds_albums_once_and_reports_rejections(client, admin_auth, worker):
    content = (
        "\ufeffArtist Name,Album Title\n"
        '"Cockburn, Bruce",You\'ve Never Seen Everything\n'
        '"Cockburn, Bruce",Life Short Call Now\n'
        ",No Artist\n"
        '"cockburn,  bruce",LIFE SHORT CALL NOW\n'
    ).encode()
    first = _upload(client, admin_auth, content)
    assert first.status_code == 200
    body = first.get_json()
    assert (body["added"], body["already_present"], body["rejected"]) == (2, 1, 1)
    assert body["rejections"][0]["line"] == 4
    # importing the same file again adds nothing
    again = _upload(client, admin_auth, content).get_json()
    assert (again["added"], again["already_present"]) == (0, 3)
    albums = client.get("/metadata/10", headers=worker).get_json()["albums"]
    assert sorted(a["album"] for a in albums) == [
        "Life Short Call Now",
        "You've Never Seen Everything",
    ]


def test_upload_without_required_columns_changes_nothing(client, admin_auth, worker, db):
    response = _upload(client, admin_auth, b"Artist,Title\nA,B\n")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_csv"
    assert client.get("/metadata/10", headers=worker).get_json() == {"albums": []}


def test_upload_needs_an_admin(client, worker):
    assert _upload(client, {}, b"Artist Name,Album Title\nA,B\n").status_code == 401
    response = _upload(client, worker, b"Artist Name,Album Title\nA,B\n")
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_cli_import_is_idempotent(tmp_path, db, monkeypatch):
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", db.name)
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    path = write_csv(
        tmp_path / "inv.csv",
        [("Cockburn, Bruce", f"Album {i}") for i in range(2500)] + [("", "x")],
        bom=True,
    )
    runner = CliRunner()
    first = runner.invoke(main, ["import-csv", str(path)])
    assert first.exit_code == 0, first.output
    assert "2500 added, 0 already present, 1 rejected" in first.output
    second = runner.invoke(main, ["import-csv", str(path)])
    assert "0 added, 2500 already present" in second.output


def test_cli_refuses_a_file_without_the_columns(tmp_path, db, monkeypatch):
    monkeypatch.setenv("DISTLEECH_COUCHDB__URL", db.server_url)
    monkeypatch.setenv("DISTLEECH_COUCHDB__DATABASE", db.name)
    monkeypatch.setenv("DISTLEECH_CONFIG", str(tmp_path / "none.yaml"))
    path = write_csv(tmp_path / "bad.csv", [("a", "b")], header=("Artist", "Title"))
    result = CliRunner().invoke(main, ["import-csv", str(path)])
    assert result.exit_code == 1
    assert "refused" in result.output
