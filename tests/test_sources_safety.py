"""Sources: who may report and renew, disabled sources, late results, paths (review fixes)."""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime

import pytest
from conftest import token_header

from app.accounts.auth import add_user, issue_token
from app.errors import ApiError
from app.queues.leasing import reap_expired_leases
from app.sources import checks, jobs
from app.store.events import event_log
from app.store.projections import rebuild_projections
from worker.coordinator import CoordinatorError
from worker.gallery import FileResult
from worker.sync import Reporter, SyncReport, UnsafePathError, content_directory
from worker.sync_report import renewing

SHA = "cd" * 32
COOKIES = ".example.org\tTRUE\t/\tTRUE\t0\tsid\ts3cret\n"


def add(client, admin_auth, source_id="s1", **fields):
    body = {"id": source_id, "url": "https://example.org/g", "content_path": source_id, **fields}
    return client.post("/api/sources", json=body, headers=admin_auth)


def order_sync(client, admin_auth, source_id="s1"):
    answer = client.post(f"/api/sources/{source_id}/sync", headers=admin_auth)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["order"]


def lease(client, headers):
    return client.get("/api/sources/next", headers=headers)


def post_files(client, headers, order, names, source_id="s1"):
    entries = [{"filename": n, "status": "downloaded", "size": 1, "sha256": SHA} for n in names]
    body = {"order": order, "files": entries}
    return client.post(f"/api/sources/{source_id}/files", json=body, headers=headers)


def finish(client, headers, order, status="synchronised", source_id="s1", **fields):
    body = {"order": order, "status": status, **fields}
    return client.post(f"/api/sources/{source_id}/synchronised", json=body, headers=headers)


def renew(client, headers, order, source_id="s1"):
    return client.post(f"/api/sources/{source_id}/renew", json={"order": order}, headers=headers)


def order_events(db):
    """(name, data) of every change of a sync order, in log order."""
    found = []
    for row in event_log(db).changes(since=0, include_docs=True)["results"]:
        for change in (row.get("doc") or {}).get("changes", []):
            if change["aggregate"].startswith("syncorder:"):
                found.append((change["name"], change["data"]))
    return found


def listed(client, admin_auth, source_id="s1"):
    page = client.get(f"/api/sources/{source_id}/files", headers=admin_auth).get_json()
    return {f["filename"]: f for f in page["files"]}


# ---------------------------------------------------------------- 2. file names


@pytest.mark.parametrize("name", ["x:y.jpg", "C:/x.jpg", "a/b:c/d.jpg"])
def test_colons_are_legal_posix_names(name):
    assert checks.check_filename(name) == name
    assert checks.check_content_path(name) == name


def test_a_lone_surrogate_is_refused_not_a_500(client, admin_auth, worker, db):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    assert lease(client, worker).status_code == 200
    entries = '[{"filename": "\\udc80.jpg", "status": "deleted"}]'  # JSON lets it in
    raw = f'{{"order": "{order}", "files": {entries}}}'
    headers = {**worker, "Content-Type": "application/json"}
    refused = client.post("/api/sources/s1/files", headers=headers, data=raw)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_filename"
    raw = f'{{"order": "{order}", "status": "failed", "reason": "\\udc80"}}'
    refused = client.post("/api/sources/s1/synchronised", headers=headers, data=raw)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_reason"


# ---------------------------------------------------------------- 4. disabled sources


def test_a_disabled_source_is_not_synced_again_after_its_lease_expired(
    client, admin_auth, worker, db, clock
):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    assert lease(client, worker).status_code == 200
    # disabled while leased: the lease runs on; then it expires and the reaper returns it
    client.patch("/api/sources/s1", json={"enabled": False}, headers=admin_auth)
    clock.advance(minutes=61)
    assert reap_expired_leases(db, clock()) == 1
    assert lease(client, worker).status_code == 204
    shown = client.get("/api/sources/s1", headers=admin_auth).get_json()["order"]
    assert (shown["order"], shown["state"]) == (order, "cancelled")
    name, data = order_events(db)[-1]
    assert (name, data["reason"]) == ("cancelled", "source disabled")
    assert rebuild_projections(db, check_only=True).differing == []


def test_a_disabled_source_is_not_retried_after_a_failure(client, admin_auth, worker, db, clock):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    assert lease(client, worker).status_code == 200
    client.patch("/api/sources/s1", json={"enabled": False}, headers=admin_auth)
    failed = finish(client, worker, order, "failed", reason="remote down").get_json()
    assert failed["state"] == "ready"  # a retry, as for any source
    clock.advance(hours=2)
    assert lease(client, worker).status_code == 204
    assert [name for name, _ in order_events(db)][-1] == "cancelled"


# ---------------------------------------------------------------- 5. late results


def test_a_late_result_on_a_cancelled_round_is_recorded_as_ignored(
    client, admin_auth, worker, db, clock
):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    assert lease(client, worker).status_code == 200
    clock.advance(minutes=61)
    reap_expired_leases(db, clock())
    client.patch("/api/sources/s1", json={"enabled": False}, headers=admin_auth)  # cancels it
    late = finish(client, worker, order, counts={"downloaded": 5}).get_json()
    assert late["recorded"] and late["ignored"] == "settled" and late["state"] == "cancelled"
    name, data = order_events(db)[-1]
    assert name == "synchronised" and data["counts"]["downloaded"] == 5
    # a different late result is recorded too; an exact repeat of the outcome is not
    assert finish(client, worker, order, "failed", reason="x").get_json()["recorded"]
    assert rebuild_projections(db, check_only=True).differing == []


def test_only_an_exact_repeat_of_a_final_outcome_records_nothing(client, admin_auth, worker, db):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    assert lease(client, worker).status_code == 200
    assert finish(client, worker, order, counts={"downloaded": 2}).get_json()["recorded"]
    assert not finish(client, worker, order, counts={"downloaded": 2}).get_json()["recorded"]
    other = finish(client, worker, order, counts={"downloaded": 3}).get_json()
    assert other["recorded"] and other["ignored"] == "settled"
    assert other["counts"] == {"downloaded": 2, "skipped": 0, "missing_remotely": 0, "deleted": 0}


# ---------------------------------------------------------------- 6. who may report files


def test_files_from_a_worker_that_never_leased_the_round_are_refused(
    client, admin_auth, worker, db, clock
):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    intruder = token_header(issue_token(db, "intruder", "worker", actor="t", now=clock()))
    before = len(order_events(db))
    refused = post_files(client, intruder, order, ["never-fetched.jpg"])
    assert refused.status_code == 403 and refused.get_json()["error"] == "not_order_holder"
    assert listed(client, admin_auth) == {} and len(order_events(db)) == before
    # the real holder is not told to skip it; its own report is taken
    leased = lease(client, worker).get_json()
    assert leased["known_files"] == []
    assert post_files(client, worker, order, ["a.jpg"]).status_code == 200
    # a holder stays one after its lease expired (its files are facts); an admin may always
    clock.advance(minutes=61)
    reap_expired_leases(db, clock())
    assert post_files(client, worker, order, ["late.jpg"]).status_code == 200
    assert post_files(client, admin_auth, order, ["by-hand.jpg"]).status_code == 200
    assert post_files(client, intruder, order, ["b.jpg"]).status_code == 403
    assert set(listed(client, admin_auth)) == {"a.jpg", "late.jpg", "by-hand.jpg"}


# ---------------------------------------------------------------- 7. renewing a lease


def test_a_renewed_lease_is_not_reaped(client, admin_auth, worker, db, clock):
    add(client, admin_auth)
    order = order_sync(client, admin_auth)
    leased = lease(client, worker).get_json()
    assert leased["lease_seconds"] == 3600
    clock.advance(minutes=50)
    renewed = renew(client, worker, order)
    assert renewed.status_code == 200 and renewed.get_json()["expires_at"] > leased["expires_at"]
    clock.advance(minutes=20)  # 70 minutes after the lease: reaped without the renewal
    assert reap_expired_leases(db, clock()) == 0
    shown = client.get("/api/sources/s1", headers=admin_auth).get_json()["order"]
    assert shown["state"] == "leased"
    second = token_header(issue_token(db, "worker-2", "worker", actor="t", now=clock()))
    assert lease(client, second).status_code == 204
    # someone else cannot renew it; once it expired and was reaped, nobody can
    assert renew(client, second, order).get_json()["error"] == "lease_not_held"
    clock.advance(minutes=41)
    assert reap_expired_leases(db, clock()) == 1
    refused = renew(client, worker, order)
    assert refused.status_code == 409 and refused.get_json()["error"] == "lease_not_held"
    assert renew(client, worker, "s1.7").status_code == 404
    assert rebuild_projections(db, check_only=True).differing == []


def test_the_worker_renews_every_third_of_the_lease():
    calls = []
    reporter = Reporter(
        RecordingCoordinator(calls), {"order": "s.1", "source_id": "s"}, SyncReport()
    )
    with renewing(reporter, 0.06):
        time.sleep(0.2)
    renewals = [path for path, _ in calls if path.endswith("/renew")]
    assert len(renewals) >= 2
    assert not [t for t in threading.enumerate() if t.name == "lease-renewal"]  # joined


# ---------------------------------------------------------------- 8. a file's location


def test_a_files_location_is_the_content_path_it_was_leased_with(client, admin_auth, worker, db):
    add(client, admin_auth, content_path="old")
    order = order_sync(client, admin_auth)
    assert lease(client, worker).get_json()["content_path"] == "old"
    # an admin moves the source while the worker syncs into "old"
    changed = client.patch("/api/sources/s1", json={"content_path": "new"}, headers=admin_auth)
    assert changed.status_code == 200
    assert post_files(client, worker, order, ["a.jpg"]).status_code == 200
    assert listed(client, admin_auth)["a.jpg"]["location"] == "old/a.jpg"
    assert finish(client, worker, order).status_code == 200
    second = order_sync(client, admin_auth)
    assert lease(client, worker).get_json()["content_path"] == "new"
    assert post_files(client, worker, second, ["b.jpg"]).status_code == 200
    assert listed(client, admin_auth)["b.jpg"]["location"] == "new/b.jpg"
    assert rebuild_projections(db, check_only=True).differing == []


# ---------------------------------------------------------------- 9. cron after a manual order


def test_a_cron_sync_follows_a_manual_order_that_ended():
    """What app/sources/jobs.py's docstring says: 02:50 by hand, then 03:00 by cron."""
    cron = {"id": "s", "enabled": True, "schedule": {"cron": "0 3 * * *"}}
    cron["schedule_from"] = "2026-01-01T00:00:00Z"
    now = datetime(2026, 1, 5, 3, 0, 30, tzinfo=UTC)
    ended = {"state": "synchronised", "queued_at": "2026-01-05T02:50:00Z"}
    assert jobs.is_due(cron, ended, now)
    assert not jobs.is_due(cron, {**ended, "state": "leased"}, now)
    hourly = {**cron, "schedule": {"interval_seconds": 3600}}
    assert not jobs.is_due(hourly, ended, now)  # an interval restarts at the manual order


# ---------------------------------------------------------------- 10. hardening


def test_an_anonymous_worker_gets_no_cookies(make_app, db, clock):
    client = make_app(auth={"anonymous_workers": True}).test_client()
    add_user(db, "root", "pw-correct-horse", admin=True, actor="t", now=clock())
    admin = {"Authorization": "Basic " + base64.b64encode(b"root:pw-correct-horse").decode()}
    for source_id in ("s1", "s2"):
        assert add(client, admin, source_id).status_code == 201
        put = client.put(
            f"/api/sources/{source_id}/cookies", json={"cookies": COOKIES}, headers=admin
        )
        assert put.status_code == 200
        order_sync(client, admin, source_id)
    anonymous = lease(client, {})
    assert anonymous.status_code == 200 and anonymous.get_json()["cookies"] is None
    assert "s3cret" not in anonymous.get_data(as_text=True)
    # a worker with a token is trusted with them
    token = token_header(issue_token(db, "w", "worker", actor="t", now=clock()))
    assert lease(client, token).get_json()["cookies"] == COOKIES


@pytest.mark.parametrize(
    "first, second", [("a", "a"), ("a", "a/b"), ("a/b", "a"), ("x/y/z", "x/y")]
)
def test_overlapping_content_paths_are_refused(client, admin_auth, db, first, second):
    assert add(client, admin_auth, "one", content_path=first).status_code == 201
    refused = add(client, admin_auth, "two", content_path=second)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_content_path"
    assert add(client, admin_auth, "two", content_path="ab").status_code == 201
    moved = client.patch("/api/sources/two", json={"content_path": second}, headers=admin_auth)
    assert moved.status_code == 400 and moved.get_json()["error"] == "invalid_content_path"
    # a source may keep (or re-state) its own path
    same = client.patch("/api/sources/one", json={"content_path": first}, headers=admin_auth)
    assert same.status_code == 200 and same.get_json()["changed"] is False


@pytest.mark.parametrize("content_path", ["a/./b", "a//b", "a\\b", ".", "", "/abs", "../x"])
def test_the_worker_uses_the_coordinators_path_rule(tmp_path, content_path):
    with pytest.raises(UnsafePathError):
        content_directory(tmp_path, content_path)
    with pytest.raises(ApiError):
        checks.check_content_path(content_path)


def test_the_worker_takes_what_the_coordinator_takes(tmp_path):
    for content_path in ("x:y", "a/b c", "ünï"):
        assert checks.check_content_path(content_path) == content_path
        assert content_directory(tmp_path, content_path) == tmp_path.resolve() / content_path


# ---------------------------------------------------------------- 3. reports never lost


class RecordingCoordinator:
    """A coordinator stand-in: records requests; `fail` maps a path suffix to errors to raise."""

    def __init__(self, calls, fail=None):
        self.calls, self.fail = calls, dict(fail or {})

    def request(self, method, path, **kwargs):
        for suffix, errors in self.fail.items():
            if path.endswith(suffix) and errors:
                raise errors.pop(0)
        self.calls.append((path, kwargs["json"]))
        return {}


def unreachable():
    return CoordinatorError(0, "unreachable", "boom")


def sent_files(calls):
    return sum(len(body["files"]) for path, body in calls if path.endswith("/files"))


def ends(calls):
    return [body for path, body in calls if path.endswith("/synchronised")]


def add_files(reporter, count):
    for number in range(count):
        reporter.add(FileResult(f"f{number}", "downloaded", 1, "0" * 64))


def test_a_batch_that_failed_to_send_is_sent_again():
    calls = []
    coordinator = RecordingCoordinator(calls, {"/files": [unreachable()]})
    reporter = Reporter(coordinator, {"order": "s.1", "source_id": "s"}, SyncReport())
    add_files(reporter, 1500)  # the first batch of 1000 fails on the way
    reporter.finish("synchronised")
    assert sent_files(calls) == 1500
    assert ends(calls)[0]["status"] == "synchronised"
    assert ends(calls)[0]["counts"]["downloaded"] == 1500


def test_reports_that_cannot_be_sent_end_the_order_failed():
    calls = []
    coordinator = RecordingCoordinator(calls, {"/files": [unreachable() for _ in range(3)]})
    report = SyncReport()
    reporter = Reporter(coordinator, {"order": "s.1", "source_id": "s"}, report)
    add_files(reporter, 1000)
    reporter.finish("synchronised")
    [end] = ends(calls)
    assert end["status"] == "failed" and "could not report 1000 file(s)" in end["reason"]
    assert (report.synchronised, report.failed) == (0, 1)


def test_a_refused_batch_fails_the_order_and_the_worker_goes_on():
    calls = []
    refusal = CoordinatorError(400, "invalid_filename", "filename must be relative")
    coordinator = RecordingCoordinator(calls, {"/files": [refusal]})
    report = SyncReport()
    reporter = Reporter(coordinator, {"order": "s.1", "source_id": "s"}, report)
    add_files(reporter, 3)
    reporter.finish("synchronised")  # raises nothing: the worker takes the next order
    [end] = ends(calls)
    assert end["status"] == "failed" and "invalid_filename" in end["reason"]
    assert report.failed == 1


def test_a_refused_result_is_reported_as_a_failure():
    calls = []
    refusal = CoordinatorError(400, "validation_failed", "counts")
    coordinator = RecordingCoordinator(calls, {"/synchronised": [refusal]})
    report = SyncReport()
    reporter = Reporter(coordinator, {"order": "s.1", "source_id": "s"}, report)
    reporter.finish("synchronised")
    [end] = ends(calls)
    assert end["status"] == "failed" and "validation_failed" in end["reason"]
    assert report.failed == 1
