"""URL tasks: the Patchwork-compatible archive queue.

A queuer adds a URL once (a URL already waiting is reported, not doubled); a
worker leases it, archives it (mode 0), re-archives it (1) or deletes it (2),
and reports "done" or "failed". A failure returns the task to the queue after
a growing delay until `leases.archive_max_attempts`, then it stays failed with
the last reason. A URL that is done or failed may be queued again: that starts
a new round on the same aggregate, `urltask:<id>`, whose id is stable.

Results are never thrown away. A completion that arrives after the lease
expired is applied; one from a worker that never held the task in the current
round (a late answer from an earlier round) or a failure from a worker whose
lease moved on to someone else is recorded with `ignored` and leaves the state
alone, so it cannot end a round someone else is working on.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from app.errors import (
    InvalidModeError,
    InvalidReasonError,
    InvalidTaskIdError,
    InvalidUrlError,
    TaskNotFoundError,
)
from app.ids import MAX_SAFE_INT, stable_int_id
from app.queues import workers
from app.queues.holders import LEASED, READY, apply_lease_event, without_holders
from app.queues.leasing import QueueLeaser
from app.store.commit import commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso
from metainfo.names import whole_number

log = logging.getLogger(__name__)

QUEUE = "archive"
DONE, FAILED = "done", "failed"
STATES = (READY, LEASED, DONE, FAILED)
COMPLETION_STATUSES = (DONE, FAILED)
MODES = (0, 1, 2)  # Patchwork's: archive, re-archive, delete
MAX_URL_CHARS = 2048
MAX_REASON_CHARS = 1000
RETRY_BASE = timedelta(minutes=5)
MAX_RETRY_DELAY = timedelta(hours=24)
MAX_SALTS = 5


# ---------------------------------------------------------------- ids and URLs


def task_doc_id(task_id: int) -> str:
    """The aggregate id of a URL task: `urltask:<id>`, the id Patchwork's clients see."""
    return f"urltask:{task_id}"


def url_task_id(url: str, salt: int = 0) -> int:
    """The task id of a normalised URL; salted only when another URL owns the plain one."""
    return stable_int_id(url) if salt == 0 else stable_int_id(url, str(salt))


def check_url(raw: Any) -> str:
    """Return the normalised URL, or raise InvalidUrlError saying what is wrong.

    Normalising lower-cases only the scheme and the host, which never changes
    what a URL names; path and query are case-sensitive on most servers.
    """
    if not isinstance(raw, str):
        raise InvalidUrlError("url must be text.")
    text = raw.strip()
    if len(text) > MAX_URL_CHARS:
        raise InvalidUrlError(f"url is longer than {MAX_URL_CHARS} characters.")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidUrlError("url must not contain spaces or control characters.")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise InvalidUrlError(f"url cannot be parsed: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or text[len(scheme) : len(scheme) + 3] != "://":
        raise InvalidUrlError("url must start with http:// or https://.")
    if not parts.hostname:
        raise InvalidUrlError("url must name a host.")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    rest = text[len(scheme) + 3 + len(parts.netloc) :]
    return f"{scheme}://{userinfo}{at}{hostport.lower()}{rest}"


def check_mode(raw: Any) -> int:
    """Patchwork's mode: 0 archive (the default when absent), 1 re-archive, 2 delete."""
    if raw is None or raw == "":
        return 0
    if _is_digits(raw):
        raw = int(raw.strip())
    if isinstance(raw, bool) or raw not in MODES:
        raise InvalidModeError(
            f"mode must be 0 (archive), 1 (re-archive) or 2 (delete), got {raw!r}."
        )
    return int(raw)


def check_task_id(raw: Any) -> int:
    """A task id: a positive whole number (JSON number or digits)."""
    if _is_digits(raw):
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_SAFE_INT:
        raise InvalidTaskIdError(f"id must be a task id (a positive whole number), got {raw!r}.")
    return raw


def _is_digits(raw: Any) -> bool:
    """ASCII digits only, a few: str.isdigit() also accepts "²", and int() refuses
    more than 4,300 digits (both would end as a 500)."""
    return isinstance(raw, str) and whole_number(raw.strip()) is not None


def check_reason(raw: Any) -> str | None:
    """An optional failure reason: text of at most MAX_REASON_CHARS."""
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_REASON_CHARS:
        raise InvalidReasonError(f"reason must be text of at most {MAX_REASON_CHARS} characters.")
    return raw.strip() or None


# ---------------------------------------------------------------- projection


def apply_url_task_event(state: Doc, event: Doc) -> None:
    """Project one URL task event (see the module docstring for the life cycle)."""
    if apply_lease_event(state, event):
        if event["name"] == "leased" and event["data"]["holder"] not in state["holders"]:
            state["holders"].append(event["data"]["holder"])
        return
    name, data = event["name"], event["data"]
    if data.get("ignored"):
        state["ignored_results"] = state.get("ignored_results", 0) + 1
    elif name == "queued" and not event.get("concurrent"):
        _start_round(state, event)  # queued at two sites while apart: one round
    elif name == "retried" and state["state"] == FAILED:
        _start_round(state, event)  # a second site's retry, apart, finds it ready: one round
    elif name == "completed":
        state.update(state=DONE, lease=None, completed_at=event["at"], completed_by=event["actor"])
    elif name == "failed" and state["state"] in (DONE, FAILED):
        state["ignored_results"] = state.get("ignored_results", 0) + 1  # another site's, apart
    elif name == "failed":
        state.update(attempts=data["attempt"], last_reason=data["reason"])
        if data.get("final"):
            state.update(state=FAILED, failed_at=event["at"], lease=None)
            return
        state["lease"] = without_holders(state.get("lease"), [event["actor"]])
        if state["lease"] is None:  # nobody else holds it (another site's worker may)
            state.update(state=READY, queue_group=1, available_at=data["retry_at"])


def _start_round(state: Doc, event: Doc) -> None:
    """Queue the URL afresh; `holders` (who leased it this round) starts empty.

    An admin's retry ("retried") is a new round too: attempts start again from
    zero, or the next failure would be final at once.
    """
    data = event["data"]
    state.update(
        id=data["id"],
        url=data["url"],
        mode=data["mode"],
        queue=QUEUE,
        state=READY,
        queue_group=0,
        available_at=event["at"],
        lease=None,
        holders=[],
        attempts=0,
        last_reason=None,
        queued_at=event["at"],
        rounds=state.get("rounds", 0) + 1,
    )


def public_task(doc: Doc) -> dict[str, Any]:
    """What /api/worker/next hands out: Patchwork's keys."""
    return {"next_video": doc["url"], "mode": doc["mode"], "id": doc["id"]}


# ---------------------------------------------------------------- queue


@dataclasses.dataclass(frozen=True)
class QueueResult:
    """What queueing a URL did: "queued" (a new round) or "already_queued"."""

    status: str
    task: Doc

    @property
    def created(self) -> bool:
        """True when this call started a round (the API answers 201)."""
        return self.status == "queued"


def _queued_decision(url: str, mode: int, task_id: int) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is not None and (state.get("url") != url or state.get("state") in (READY, LEASED)):
            return None  # another URL owns this id, or this one is waiting already
        return "queued", {"url": url, "mode": mode, "id": task_id}

    return decide


def queue_url(db: Database, url: str, mode: int, *, actor: str, now: datetime) -> QueueResult:
    """Queue a checked URL once; a URL that is done or failed starts a new round.

    Should two URLs ever hash to one id, the later one is salted until its id
    is free (as albums do), so no URL ever shares another's task.
    """
    for salt in range(MAX_SALTS):
        task_id = url_task_id(url, salt)
        [outcome] = commit(
            db, [(task_doc_id(task_id), _queued_decision(url, mode, task_id))], actor=actor, now=now
        )
        if outcome.state is not None and outcome.state.get("url") == url:
            return QueueResult("queued" if outcome.recorded else "already_queued", outcome.state)
    raise RuntimeError(f"no free task id for {url!r} after {MAX_SALTS} salts")


def lease_next(
    leaser: QueueLeaser, holder: str, now: datetime, minutes: float
) -> dict[str, Any] | None:
    """Lease the oldest ready URL (never-tried first, then due retries), or None."""
    docs = leaser.lease(QUEUE, holder, 1, now, timedelta(minutes=minutes), actor=holder)
    return public_task(docs[0]) if docs else None


# ---------------------------------------------------------------- completion


@dataclasses.dataclass(frozen=True)
class Completion:
    """A worker's report on one task. `any_round`: an admin settling a task by hand."""

    task_id: int
    status: str  # DONE or FAILED
    holder: str
    reason: str | None = None
    any_round: bool = False


def retry_delay(attempt: int) -> timedelta:
    """Back off 5, 10, 20 … minutes after the 1st, 2nd, 3rd … failure, at most a day."""
    return min(RETRY_BASE * 2 ** (attempt - 1), MAX_RETRY_DELAY)


def _ignored_because(state: Doc, result: Completion) -> str | None:
    """Why a result must not move the task, or None when it applies.

    "stale": the reporter never leased the task this round (an earlier round's
    late answer). "superseded": a failure while someone else holds the lease;
    their outcome decides. A "done" from a former holder always applies.
    """
    if not result.any_round and result.holder not in state.get("holders", []):
        return "stale"
    holder = (state.get("lease") or {}).get("holder")
    if result.status == FAILED and state.get("state") == LEASED and holder != result.holder:
        return "superseded"
    return None


def _completion_decision(result: Completion, now: datetime, max_attempts: int) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or _is_settled(state, result.status):
            return None
        data: dict[str, Any] = {"round": state.get("rounds", 1)}
        if result.status == FAILED:
            data["reason"] = result.reason
        ignored = _ignored_because(state, result)
        if ignored:
            return _event_name(result.status), {**data, "ignored": ignored}
        if result.status == DONE:
            return "completed", data
        attempt = state.get("attempts", 0) + 1
        if attempt >= max_attempts:
            return "failed", {**data, "attempt": attempt, "final": True}
        return "failed", {**data, "attempt": attempt, "retry_at": iso(now + retry_delay(attempt))}

    return decide


def _is_settled(state: Doc, status: str) -> bool:
    """Nothing to record: the task is done, or failed for good and this is another failure."""
    return state.get("state") == DONE or (state.get("state") == FAILED and status == FAILED)


def _event_name(status: str) -> str:
    """The task event a result records: "completed" for done, "failed" for failed."""
    return "completed" if status == DONE else "failed"


def complete_task(
    db: Database, result: Completion, *, now: datetime, max_attempts: int
) -> dict[str, Any]:
    """Record a worker's result and count it for the worker; return the task's report.

    Raises TaskNotFoundError for an unknown id. A result on a settled task is
    reported with "recorded": false and counts for nobody (a repeated request).
    """
    doc_id = task_doc_id(result.task_id)
    decide = _completion_decision(result, now, max_attempts)
    [outcome] = commit(db, [(doc_id, decide)], actor=result.holder, now=now)
    if outcome.state is None:
        raise TaskNotFoundError(f"No URL task has id {result.task_id}.", id=result.task_id)
    if outcome.event is not None:
        workers.record_task_result(
            db,
            result.holder,
            result.task_id,
            result.status,
            source=f"{outcome.event['event']}/{doc_id}",
            now=now,
        )
    return task_report(outcome.state, outcome.event)


def task_report(task: Doc, event: Doc | None) -> dict[str, Any]:
    """The answer to a completion: the task's state, and what this result did to it."""
    report: dict[str, Any] = {
        "id": task["id"],
        "url": task["url"],
        "state": task["state"],
        "recorded": event is not None,
        "attempts": task.get("attempts", 0),
    }
    data = event["data"] if event else {}
    for key in ("ignored", "retry_at", "final"):
        if key in data:
            report[key] = data[key]
    if task["state"] == FAILED:
        report["reason"] = task.get("last_reason")
    return report


# ---------------------------------------------------------------- retry by hand


def _retried_decision(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
    if state is None or state.get("state") != FAILED:
        return None
    data = {"url": state["url"], "mode": state["mode"], "id": state["id"]}
    return "retried", {**data, "after_attempts": state.get("attempts", 0)}


def retry_task(db: Database, task_id: int, *, actor: str, now: datetime) -> dict[str, Any]:
    """Queue a task that failed for good again, as a new round; return its report.

    Raises TaskNotFoundError for an unknown id. A task that is not failed
    (retried already, or never failed) is left alone and reported with
    "recorded": false, so a repeated click changes nothing.
    """
    [outcome] = commit(db, [(task_doc_id(task_id), _retried_decision)], actor=actor, now=now)
    if outcome.state is None:
        raise TaskNotFoundError(f"No URL task has id {task_id}.", id=task_id)
    return task_report(outcome.state, outcome.event)


# ---------------------------------------------------------------- counts


def count_by_state(db: Database) -> dict[str, int]:
    """How many URL tasks are in each state (every state listed, zero included).

    Reads the stats/by_type_state view grouped to [type, state]: the range is
    this one type, so the reduce stays small even on the bundled server.
    """
    rows = db.view(
        "stats", "by_type_state", startkey=["urltask"], endkey=["urltask", {}], group_level=2
    )
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        state = row["key"][1]
        if state in counts:
            counts[state] += row["value"]
    return counts


def list_tasks(db: Database, state: str | None = None, *, limit: int = 100) -> list[Doc]:
    """URL tasks in `state` (else failed first, then leased, ready, done), at most `limit`.

    Reads the stats/by_type_state view by [type, state], one state at a time:
    ordered by id within a state, so the newest of a big state are not
    guaranteed (the page says how many there are). Without a state the tasks
    that need someone come first, however many are done.
    """
    found: list[Doc] = []
    for wanted in [state] if state else [FAILED, LEASED, READY, DONE]:
        rows = db.view(
            "stats",
            "by_type_state",
            reduce=False,
            include_docs=True,
            limit=limit - len(found),
            startkey=["urltask", wanted],
            endkey=["urltask", wanted, {}],
        )
        docs = [row["doc"] for row in rows if row.get("doc")]
        found += sorted(docs, key=lambda d: d.get("queued_at", ""), reverse=True)
        if len(found) >= limit:
            break
    return found
