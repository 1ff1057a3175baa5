"""Who may call what: every route of the app × every kind of caller → allowed or refused.

The matrix below is the one place that says who may call each endpoint; the
test walks Flask's URL map, so a new route without an entry here fails. A
caller that is let in may still get a 4xx for its (empty) request: the test
only checks the door. Refused callers get 401 from the API when they sent no
credential, 403 with the wrong role; a page sends an anonymous browser to
/login and answers the wrong role with a 403 page. People call with a login
session and its CSRF token (as the pages do); workers, queuers and readers
(the event stream) with their tokens.
"""

from __future__ import annotations

import pytest
from conftest import token_header

from app.accounts import invites
from app.accounts.auth import issue_token

ANONYMOUS, MEMBER, UPLOADER, WORKER, QUEUER, READER, ADMIN = (
    "anonymous",
    "member",
    "uploader",
    "worker",
    "queuer",
    "reader",
    "admin",
)
CALLERS = (ANONYMOUS, MEMBER, UPLOADER, WORKER, QUEUER, READER, ADMIN)
EVERYONE = frozenset(CALLERS)
PEOPLE = frozenset({MEMBER, UPLOADER, ADMIN})
UPLOADERS = frozenset({UPLOADER, ADMIN})
WORKERS = frozenset({WORKER, ADMIN})
WORKERS_AND_PEOPLE = WORKERS | PEOPLE
QUEUERS = frozenset({QUEUER, ADMIN})
READERS = frozenset({READER, ADMIN})
ADMINS = frozenset({ADMIN})

# endpoint → who may call it (every method of the route)
MATRIX: dict[str, frozenset[str]] = {
    # accounts and people
    "accounts.log_in": EVERYONE,
    "accounts.register": EVERYONE,
    "accounts.who_am_i": PEOPLE,
    "accounts.log_out": PEOPLE,
    "accounts.new_password": PEOPLE,
    "accounts.create_invite": ADMINS,  # and members an admin allowed: test_people.py
    "accounts.list_invites": PEOPLE,
    "accounts.revoke_invite": PEOPLE,
    "people.my_profile": PEOPLE,
    "people.rotate_passkey": PEOPLE,
    "people.list_users": ADMINS,
    "people.change_user": ADMINS,
    "sites.list_sites": ADMINS,
    "tokens.tokens": ADMINS,
    "tokens.add_token": ADMINS,
    "tokens.remove_token": ADMINS,
    # admins' queue management
    "admin.import_csv": ADMINS,
    "admin.import_progress": ADMINS,
    "admin.list_leases": ADMINS,
    "admin.release_lease": ADMINS,
    "archive.list_tasks": ADMINS,
    "archive.retry_task": ADMINS,
    # sources (gallery-dl syncs)
    "sources.add_source": ADMINS,
    "sources.list_sources": ADMINS,
    "sources.get_source": ADMINS,
    "sources.change_source": ADMINS,
    "sources.set_cookies": ADMINS,
    "sources.remove_cookies": ADMINS,
    "sources.order_sync": ADMINS,
    "sources.list_files": ADMINS,
    "sources.lease_next": WORKERS,
    "sources.record_files": WORKERS,
    "sources.report_synchronised": WORKERS,
    "sources.renew_lease": WORKERS,
    # storage status
    "storage.storage_status": WORKERS,
    "storage.storage_statistics": EVERYONE,  # as /api/status (Patchwork)
    # the event stream and webhooks
    "events.stream_events": READERS,
    "events.add_webhook": ADMINS,
    "events.list_webhooks": ADMINS,
    "events.show_webhook": ADMINS,
    "events.remove_webhook": ADMINS,
    "events.list_dead_letters": ADMINS,
    "events.redeliver_dead_letter": ADMINS,
    "events.redeliver_dead_letters": ADMINS,
    # the original clients' queues
    "metadata.lease_metadata": WORKERS,
    "metadata.submit_metadata": WORKERS,
    "metadata.submit_metadata_get": EVERYONE,  # always 405
    "metadata.lease_torrents": WORKERS,
    "metadata.torrents_get": EVERYONE,  # always 405
    "metadata.submit_torrents": WORKERS,
    "archive.queue_url": QUEUERS,
    "archive.lease_next": WORKERS,
    "archive.complete_task": WORKERS,
    "archive.heartbeat": WORKERS,
    "archive.status": EVERYONE,  # as in Patchwork
    "cache.read_cache": WORKERS,
    "cache.write_cache": WORKERS,
    "ingest.ingest_listings": WORKERS,
    # the torrent registry
    "torrents.upload_torrent": frozenset({WORKER}) | UPLOADERS,
    "torrents.search_torrents": WORKERS_AND_PEOPLE,
    "torrents.reseed_lookup": WORKERS_AND_PEOPLE,
    "torrents.reseed_lookup_by_site": WORKERS,
    "torrents.torrent_file": WORKERS,
    "torrents.mark_unavailable": WORKERS,
    "torrents.mark_unavailable_by_site": WORKERS,
    # the tracker's directory (Mika's API) and members' downloads
    "tracker.register_torrent": ADMINS,
    "tracker.get_torrent": ADMINS,
    "tracker.unregister_torrent": ADMINS,
    "tracker.torrent_peers": ADMINS,
    "tracker.counts": ADMINS,
    "tracker.register_user": ADMINS,
    "tracker.get_user": ADMINS,
    "tracker.update_user": ADMINS,
    "tracker.delete_user": ADMINS,
    "tracker.user_torrents": ADMINS,
    "tracker.add_whitelist_entry": ADMINS,
    "tracker.remove_whitelist_entry": ADMINS,
    "tracker.list_whitelist": ADMINS,
    "tracker.member_download": EVERYONE,  # the passkey is the credential
    "stats.show_stats": EVERYONE,
    # pages
    "auth_pages.login_form": EVERYONE,
    "auth_pages.login": EVERYONE,
    "auth_pages.logout": EVERYONE,
    "auth_pages.register_form": EVERYONE,
    "auth_pages.register": EVERYONE,
    "dashboard.home": PEOPLE,
    "dashboard.events_fragment": PEOPLE,
    "dashboard.throughput_json": PEOPLE,
    "inventory.browse": PEOPLE,
    "inventory.album": PEOPLE,
    "library.browse": PEOPLE,
    "library.counts": PEOPLE,
    "library.torrent": PEOPLE,
    "library.upload_form": UPLOADERS,
    "library.upload": UPLOADERS,
    "profile.show": PEOPLE,
    "profile.rotate_passkey": PEOPLE,
    "profile.change_password": PEOPLE,
    "profile.create_invite": ADMINS,  # and members an admin allowed
    "profile.revoke_invite": PEOPLE,  # their own: another's is 404
    "admin_pages.index": ADMINS,
    "admin_pages.people_page": ADMINS,
    "admin_pages.change_person": ADMINS,
    "admin_pages.revoke_invite": ADMINS,
    "admin_pages.tokens_page": ADMINS,
    "admin_pages.issue_token": ADMINS,
    "admin_pages.revoke_token": ADMINS,
    "admin_pages.whitelist_page": ADMINS,
    "admin_pages.add_whitelist_entry": ADMINS,
    "admin_pages.remove_whitelist_entry": ADMINS,
    "admin_pages.tracked_page": ADMINS,
    "admin_pages.unregister_torrent": ADMINS,
    "queue_pages.leases_page": ADMINS,
    "queue_pages.release": ADMINS,
    "queue_pages.import_form": ADMINS,
    "queue_pages.import_upload": ADMINS,
    "queue_pages.import_progress": ADMINS,
    "queue_pages.archive_page": ADMINS,
    "queue_pages.retry": ADMINS,
    "queue_pages.queue": ADMINS,
    # files
    "static": EVERYONE,
    "web.static": EVERYONE,
    "assets.asset": EVERYONE,
}

# What fills a route's variables: any value of the right shape will do.
PATH_VALUES = {
    "invite_id": "0123456789abcdef",
    "kind": "artist",
    "info_hash": "ab" * 20,
    "site": "example.org",
    "torrent_id": "1",
    "rows": "1",
    "user_id": "1",
    "prefix": "-XX",
    "name": "nobody",
    "filename": "site.css",
    "task_id": "1",
    "id": "1",
    "import_id": "0123456789abcdef",
    "source_id": "nosuchsource",
    "webhook_id": "0123456789abcdef",
    "delivery_id": "0123456789abcdef",
    "album_id": "1",
}
# Asked last: they end the caller's login session.
ENDS_SESSION = ("accounts.log_out", "auth_pages.logout")
PASSWORD = "correct horse battery"


def routes(app):
    """(endpoint, method, path) of every route, the session-ending ones last."""
    found = []
    for rule in app.url_map.iter_rules():
        values = {arg: PATH_VALUES.get(arg, "x") for arg in rule.arguments}
        path = rule.build(values, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return sorted(found, key=lambda route: route[0] in ENDS_SESSION)


def test_every_route_is_in_the_matrix(app):
    missing = sorted({endpoint for endpoint, _, _ in routes(app)} - MATRIX.keys())
    assert missing == [], f"say who may call these in MATRIX: {missing}"
    gone = sorted(MATRIX.keys() - {endpoint for endpoint, _, _ in routes(app)})
    assert gone == [], f"these endpoints no longer exist: {gone}"


def person(client, db, clock, admin_auth, role):
    """A person of this role with a login session in `client`; return the CSRF headers."""
    if role == ADMIN:
        name = "root"
    else:
        secret, _ = invites.create_invite(db, inviter="root", role=role, now=clock())
        name = f"a-{role}"
        invites.register(db, secret, name, PASSWORD, now=clock())
    login = client.post("/api/session", json={"name": name, "password": PASSWORD})
    assert login.status_code == 200, login.get_data(as_text=True)
    return {"X-CSRF-Token": login.get_json()["csrf_token"]}


@pytest.fixture
def caller_headers(app, db, clock, admin_auth, worker_token, queuer_token):
    reader_token = issue_token(db, "reader-1", READER, actor="test", now=clock())
    tokens = {WORKER: worker_token, QUEUER: queuer_token, READER: reader_token}

    def headers_for(client, caller):
        if caller in PEOPLE:
            return person(client, db, clock, admin_auth, caller)
        return token_header(tokens[caller]) if caller in tokens else {}

    return headers_for


def is_page(path: str) -> bool:
    return not path.startswith(("/api", "/metadata", "/torrents", "/stats", "/assets"))


def verdict(response, endpoint: str) -> str:
    """'allowed', or how the caller was refused."""
    status = response.status_code
    if status == 401:
        return "refused: 401"
    if status == 403:
        return (
            "refused: csrf" if "csrf_failed" in response.get_data(as_text=True) else "refused: 403"
        )
    sent_to_login = "/login" in response.headers.get("Location", "")
    if status in (302, 303) and sent_to_login and endpoint not in ENDS_SESSION:
        return "refused: sent to log in"
    return "allowed"


@pytest.mark.parametrize("caller", CALLERS)
def test_each_caller_reaches_exactly_what_the_matrix_allows(app, caller, caller_headers):
    client = app.test_client()
    headers = caller_headers(client, caller)
    csrf = headers.get("X-CSRF-Token", "")
    wrong = []
    for endpoint, method, path in routes(app):
        form = {"csrf_token": csrf} if method != "GET" and is_page(path) else None
        response = client.open(path, method=method, headers=headers, data=form)
        got = verdict(response, endpoint)
        response.close()
        allowed = caller in MATRIX[endpoint]
        if allowed != (got == "allowed"):
            wrong.append(f"{method} {path} ({endpoint}): {got} [{response.status_code}]")
        if not allowed and caller == ANONYMOUS and not is_page(path):
            if response.status_code != 401:
                wrong.append(f"{method} {path}: anonymous got {response.status_code}, not 401")
    assert wrong == [], f"{caller}:\n" + "\n".join(wrong)
