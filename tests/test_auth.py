"""Invariant 7 on every endpoint of app/api/metadata.py: the right credential or nothing."""

from __future__ import annotations

import base64

import pytest
from conftest import basic_auth, token_header
from factories import PTH, album_id_for, event_ids, make_albums, make_download_task

from app.accounts.auth import add_user, issue_token, revoke_token
from app.queues.albums import album_doc_id

ALBUM = album_id_for("Cockburn, Bruce", "Album 0")
TASK_REF = [{"site": PTH, "torrentId": 5}]

# (method, path, request keyword arguments) of every guarded endpoint
ENDPOINTS = [
    ("GET", "/metadata/1", {}),
    ("POST", "/metadata/submit", {"json": {str(ALBUM): []}}),
    ("PUT", "/metadata/submit", {"json": {str(ALBUM): []}}),
    ("POST", "/torrents", {"data": {"site": PTH, "rows": "1"}}),
    ("POST", "/torrents/submit", {"json": {"/ingest/a": TASK_REF}}),
    ("PUT", "/torrents/submit", {"json": {"/ingest/a": TASK_REF}}),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]


@pytest.fixture
def work(db, clock):
    """Something for every endpoint to act on: one album and one download task."""
    assert make_albums(db, 1, now=clock()) == [ALBUM]
    make_download_task(db, 5, now=clock(), album_ids=[ALBUM])


def call(client, endpoint, headers):
    method, path, kwargs = endpoint
    return client.open(path, method=method, headers=headers, **kwargs)


def refused(client, db, endpoint, headers, status, code):
    before = event_ids(db)
    response = call(client, endpoint, headers)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert event_ids(db) == before  # a refused call changes nothing
    return response


@pytest.mark.usefixtures("work")
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
class TestEveryEndpoint:
    def test_no_credential(self, client, db, endpoint):
        response = refused(client, db, endpoint, {}, 401, "authentication_required")
        assert response.headers["WWW-Authenticate"].startswith("Basic")

    @pytest.mark.parametrize(
        "headers",
        [
            token_header("not-a-token"),
            {"Authorization": "Bearer not-a-token"},
            basic_auth("root", "wrong password"),
            basic_auth("nobody", "correct horse battery"),
            {"Authorization": "Basic ###"},
            {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()},
        ],
        ids=["token", "bearer", "password", "user", "undecodable", "not-utf8"],
    )
    def test_wrong_credential(self, client, db, admin_auth, endpoint, headers):
        refused(client, db, endpoint, headers, 401, "invalid_credentials")

    def test_wrong_credential_even_for_anonymous_workers(self, make_app, db, endpoint):
        client = make_app(auth={"anonymous_workers": True}).test_client()
        refused(client, db, endpoint, token_header("not-a-token"), 401, "invalid_credentials")

    def test_queuer_is_forbidden(self, client, db, queuer_token, endpoint):
        refused(client, db, endpoint, token_header(queuer_token), 403, "forbidden")

    def test_non_admin_user_is_forbidden(self, client, db, clock, endpoint):
        add_user(db, "b.gates", "long enough pw", admin=False, actor="test", now=clock())
        refused(client, db, endpoint, basic_auth("b.gates", "long enough pw"), 403, "forbidden")

    def test_worker_token(self, client, worker, endpoint):
        assert call(client, endpoint, worker).status_code == 200

    def test_worker_token_as_bearer(self, client, worker_token, endpoint):
        headers = {"Authorization": f"Bearer {worker_token}"}
        assert call(client, endpoint, headers).status_code == 200

    def test_admin_basic_auth(self, client, admin_auth, endpoint):
        assert call(client, endpoint, admin_auth).status_code == 200

    def test_revoked_token_is_refused(self, make_app, db, clock, worker, endpoint):
        client = make_app(auth={"credential_cache_seconds": 0.000001}).test_client()
        assert call(client, endpoint, worker).status_code == 200
        assert revoke_token(db, "worker-1", actor="test", now=clock()) == 1
        refused(client, db, endpoint, worker, 401, "invalid_credentials")


def test_revoked_token_is_refused_by_a_fresh_app(make_app, db, clock, worker, work):
    revoke_token(db, "worker-1", actor="test", now=clock())
    response = make_app().test_client().get("/metadata/1", headers=worker)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_credentials"


def test_a_new_token_of_a_revoked_name_works(make_app, db, clock, worker, work):
    revoke_token(db, "worker-1", actor="test", now=clock())
    fresh = issue_token(db, "worker-1", "worker", actor="test", now=clock())
    client = make_app().test_client()
    assert client.get("/metadata/1", headers=token_header(fresh)).status_code == 200
    assert client.get("/metadata/1", headers=worker).status_code == 401


@pytest.mark.parametrize(
    ("credential", "holder"),
    [("worker", "worker-1"), ("bearer", "worker-1"), ("admin", "root"), ("anonymous", None)],
)
def test_lease_records_who_holds_it(
    make_app, db, work, worker_token, admin_auth, credential, holder
):
    headers = {
        "worker": token_header(worker_token),
        "bearer": {"Authorization": f"Bearer {worker_token}"},
        "admin": admin_auth,
        "anonymous": {},
    }[credential]
    client = make_app(auth={"anonymous_workers": True}).test_client()
    response = client.get("/metadata/1", headers=headers)
    assert [a["id"] for a in response.get_json()["albums"]] == [ALBUM]
    lease = db.get(album_doc_id(ALBUM))["lease"]
    if holder is None:  # an anonymous caller is named by its address
        assert lease["holder"].startswith("anonymous@")
    else:
        assert lease["holder"] == holder


def test_get_torrents_is_405_for_everyone(client):
    response = client.get("/torrents")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
