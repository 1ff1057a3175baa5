"""What the HTTP layer accepts as a body: JSON only as JSON, nesting bounded, no CSRF.

A browser may post a form, text/plain or a body without a type to any site
with the basic-auth credentials it holds; application/json it may not. So a
JSON body counts only under a JSON content type, and browsers' writes from
another site's page are refused outright (form endpoints stay forms).
"""

from __future__ import annotations

import io
import json

import pytest
from factories import make_albums

from tests.conftest import basic_auth, token_header

IH = "a" * 40
PTH = "https://passtheheadphones.me/"

# Every endpoint that reads a JSON body: (method, path, who, a valid body).
JSON_ENDPOINTS = [
    ("post", "/metadata/submit", "worker", {"111": []}),
    ("put", "/metadata/submit", "worker", {"111": []}),
    ("post", "/torrents/submit", "worker", {"/ingest/x": [{"site": PTH, "torrentId": 1}]}),
    ("post", "/api/torrents", "worker", {"site": PTH, "gazelle": {}}),
    ("post", "/api/ingest", "worker", {"path": "x", "kind": "directory", "files": []}),
    ("put", "/api/cache/artist", "worker", {"site": PTH, "key": "k", "value": 1}),
    ("post", f"/api/torrents/{IH}/unavailable", "worker", {"reason": "trumped"}),
    ("post", "/api/worker/queue", "queuer", {"url": "https://example.org/v/1"}),
    ("post", "/api/worker/heartbeat", "worker", {"name": "worker-1", "status": "ok"}),
    ("post", "/api/torrent", "admin", {"info_hash": IH, "torrent_id": 1, "name": "x"}),
    ("post", "/api/user", "admin", {"user_id": 1, "name": "x"}),
    ("patch", "/api/user/1", "admin", {"name": "y"}),
    ("post", "/api/whitelist", "admin", {"prefix": "-qB", "client": "qBittorrent"}),
]
IDS = [f"{method} {path}" for method, path, _, _ in JSON_ENDPOINTS]


@pytest.fixture
def creds(worker, queuer_token, admin_auth):
    return {"worker": worker, "queuer": token_header(queuer_token), "admin": admin_auth}


def send(client, method, path, headers, data, content_type=None):
    kwargs = {"data": data, "headers": headers}
    if content_type is not None:
        kwargs["content_type"] = content_type
    return getattr(client, method)(path, **kwargs)


def error_of(response):
    return response.status_code, response.get_json()["error"]


# ---------------------------------------------------------------- nesting


@pytest.mark.parametrize(("method", "path", "who", "body"), JSON_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("deep", ["[" * 100_000, '{"a":' * 100_000, "[" * 200 + "]" * 200])
def test_a_deeply_nested_body_is_invalid_json_not_a_crash(
    client, creds, method, path, who, body, deep
):
    response = send(client, method, path, creds[who], deep, "application/json")
    assert error_of(response) == (400, "invalid_json")
    assert "deeper than" in response.get_json()["reason"]


def test_a_deeply_nested_gazelle_form_field_is_refused_with_its_code(client, worker):
    form = {"site": PTH, "torrentId": "1", "gazelle": "[" * 100_000}
    response = client.post(
        "/api/torrents", data=form, headers=worker, content_type="multipart/form-data"
    )
    assert error_of(response) == (400, "invalid_gazelle")


def test_ordinary_nesting_is_fine(client, worker):
    value = {"response": {"torrentgroup": [{"torrent": [{"id": 1, "tags": [["a"]]}]}]}}
    body = {"site": PTH, "key": "Cockburn", "value": value}
    response = client.put("/api/cache/artist", json=body, headers=worker)
    assert response.status_code == 200, response.get_json()
    got = client.get(f"/api/cache/artist?site={PTH}&key=Cockburn", headers=worker)
    assert got.get_json()["value"] == value


# ---------------------------------------------------------------- content types


@pytest.mark.parametrize(("method", "path", "who", "body"), JSON_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "text/json"]
)
def test_json_under_another_content_type_is_415(
    client, creds, method, path, who, body, content_type
):
    # "" sends no Content-Type at all (fetch() with a Blob body does that too)
    response = send(client, method, path, creds[who], json.dumps(body), content_type)
    assert error_of(response) == (415, "unsupported_media_type")
    assert "application/json" in response.get_json()["reason"]


def test_a_browser_cannot_make_an_admin_track_a_torrent(client, admin_auth):
    # <form enctype="text/plain"> posting {"info_hash": …} with the admin's basic auth
    body = json.dumps({"info_hash": IH, "torrent_id": 1, "name": "evil"})
    response = client.post("/api/torrent", data=body, content_type="text/plain", headers=admin_auth)
    assert error_of(response) == (415, "unsupported_media_type")
    assert client.get("/api/counts", headers=admin_auth).get_json() == []
    # the same body as JSON is what a script sends, and works
    response = client.post(
        "/api/torrent", data=body, content_type="application/json", headers=admin_auth
    )
    assert response.status_code == 201


def test_a_structured_json_type_is_json(client, creds):
    body = json.dumps({"info_hash": IH, "torrent_id": 1, "name": "x"})
    response = client.post(
        "/api/torrent", data=body, content_type="application/vnd.api+json", headers=creds["admin"]
    )
    assert response.status_code == 201


def test_the_original_clients_submit_with_application_json(client, worker):
    # the distleech worker posts with requests' json= (Content-Type: application/json)
    response = client.post("/metadata/submit", json={"111": []}, headers=worker)
    # an unknown album, reported per entry: the body was read as JSON
    assert error_of(response) == (400, "no_valid_entries")
    assert "unknown_album" in json.dumps(response.get_json())


def test_anonymous_workers_do_not_reopen_text_plain(make_app):
    client = make_app(auth={"anonymous_workers": True}).test_client()
    response = client.post("/metadata/submit", data='{"111": []}', content_type="text/plain")
    assert error_of(response) == (415, "unsupported_media_type")


def test_the_patchwork_queue_takes_a_form_or_json_not_json_as_a_form(client, queuer_token):
    queuer = token_header(queuer_token)
    url = "https://example.org/v/1"
    assert client.post("/api/worker/queue", data={"url": url}, headers=queuer).status_code == 201
    as_json = client.post("/api/worker/queue", json={"url": url + "2"}, headers=queuer)
    assert as_json.status_code == 201
    # curl -d '{"url": …}' sends a form: answered with how to send JSON
    response = send(
        client,
        "post",
        "/api/worker/queue",
        queuer,
        json.dumps({"url": url + "3"}),
        "application/x-www-form-urlencoded",
    )
    assert error_of(response) == (415, "unsupported_media_type")
    assert "Content-Type: application/json" in response.get_json()["reason"]
    text = send(client, "post", "/api/worker/queue", queuer, f"url={url}4", "text/plain")
    assert error_of(text) == (415, "unsupported_media_type")
    assert client.get("/api/status").get_json()["queue"]["ready"] == 2


# ---------------------------------------------------------------- cross-site writes


@pytest.mark.parametrize(
    "browser",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ],
)
def test_a_browser_write_from_another_site_is_refused(client, admin_auth, browser):
    headers = {**admin_auth, **browser}
    form = client.post(
        "/api/worker/queue", data={"url": "https://example.org/v/9"}, headers=headers
    )
    assert error_of(form) == (403, "cross_site_request")
    csv = (io.BytesIO(b"Artist Name,Album Title\nCockburn Bruce,Humans\n"), "a.csv")
    upload = client.post("/api/admin/import-csv", data={"file": csv}, headers=headers)
    assert error_of(upload) == (403, "cross_site_request")
    assert client.get("/api/status").get_json()["queue"]["ready"] == 0
    assert client.get("/stats?format=json").get_json()["albums"] == 0


@pytest.mark.parametrize(
    "browser", [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost"}, {}]
)
def test_same_origin_and_scripts_are_not_refused(client, admin_auth, browser):
    headers = {**admin_auth, **browser}
    response = client.post(
        "/api/worker/queue", data={"url": "https://example.org/v/9"}, headers=headers
    )
    assert response.status_code == 201
    # reads are never refused: a page may link to /stats
    assert client.get("/stats", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_a_cross_site_get_cannot_lease_work_with_an_admins_browser(client, db, admin_auth, clock):
    """GET /metadata/<rows> and /api/worker/next lease work: an <img> on another
    page must not make a logged-in admin's browser take albums or URLs."""
    make_albums(db, 2, now=clock())
    client.post("/api/worker/queue", data={"url": "https://example.org/v/9"}, headers=admin_auth)
    browser = {**admin_auth, "Sec-Fetch-Site": "cross-site"}
    assert error_of(client.get("/metadata/5", headers=browser)) == (403, "cross_site_request")
    assert error_of(client.get("/api/worker/next", headers=browser)) == (
        403,
        "cross_site_request",
    )
    assert len(client.get("/metadata/5", headers=admin_auth).get_json()["albums"]) == 2
    assert client.get("/api/worker/next", headers=admin_auth).status_code == 200


# ---------------------------------------------------------------- 401 says how to get a credential


def test_a_401_says_which_command_makes_a_credential_and_which_header_carries_it(client):
    missing = client.get("/metadata/1")
    assert error_of(missing) == (401, "authentication_required")
    reason = missing.get_json()["reason"]
    assert "distleech token add --role worker" in reason
    assert "X-AUTHENTICATION" in reason
    admin_only = client.post("/api/torrent", json={"info_hash": IH, "torrent_id": 1, "name": "x"})
    assert error_of(admin_only) == (401, "authentication_required")
    assert "distleech user add" in admin_only.get_json()["reason"]
    assert "basic auth" in admin_only.get_json()["reason"]


def test_a_wrong_credential_says_how_to_get_a_right_one(client):
    wrong = client.get("/metadata/1", headers=token_header("not-a-token"))
    assert error_of(wrong) == (401, "invalid_credentials")
    assert "distleech token add" in wrong.get_json()["reason"]
    wrong = client.get("/metadata/1", headers=basic_auth("nobody", "wrong password"))
    assert error_of(wrong) == (401, "invalid_credentials")
    assert "distleech user add" in wrong.get_json()["reason"]
