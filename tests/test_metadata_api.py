"""The original distleech_server metadata queue, over HTTP."""

from __future__ import annotations

from factories import make_albums


def test_lease_returns_original_shape_and_holds_albums(client, db, worker, clock):
    make_albums(db, 3, now=clock())
    response = client.get("/metadata/2", headers=worker)
    assert response.status_code == 200
    albums = response.get_json()["albums"]
    assert len(albums) == 2
    assert set(albums[0]) == {"album", "id", "sortArtist"}
    assert albums[0]["sortArtist"] == "Cockburn, Bruce"
    # the two leased albums are not handed out again while the lease lasts
    rest = client.get("/metadata/5", headers=worker).get_json()["albums"]
    assert [a["id"] for a in rest] not in [[a["id"]] for a in albums]
    assert len(rest) == 1
    assert client.get("/metadata/5", headers=worker).get_json() == {"albums": []}
