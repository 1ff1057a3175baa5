"""Dashboard at `/`: queue progress, throughput, workers, leaderboards, events, sites, storage.

Every figure comes from where the JSON API takes it, so a person and a script
never see two different numbers: queue counts from app/stats.py (the same call
GET /stats makes), workers from their projections, sites from their stored
replication state. Nothing here reduces a view per page view: the counts,
the throughput history and the members' leaderboard are the scheduler's
snapshots (app/stats.py), and recent events are one short _all_docs read of
the log, whose ids sort by time.

The page reads whole without JavaScript; with it, htmx swaps in new events
every few seconds (GET /dashboard/events) and dashboard.js draws the chart
from GET /dashboard/throughput.json. Who: any logged-in person.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Response, jsonify, render_template, request

from app import stats
from app.accounts.auth import ADMIN
from app.api.storage import current_storage
from app.api.web import context
from app.queues.workers import list_workers
from app.sites.status import lag, site_statuses
from app.storage.status import INGEST
from app.store.couch import Database, prefix_end
from app.store.designdocs import get_warming_state, is_warming
from app.store.events import EVENT_PREFIX, Doc, event_log, site_of
from app.timeutil import iso, parse_iso
from app.web.pages import (
    has_role,
    login_required,
    page_blueprint,
    render_error_page,
    render_page,
    viewer,
)

bp = page_blueprint("dashboard", __name__)

F = TypeVar("F", bound=Callable[..., Any])

RECENT_EVENTS = 20
WORKERS_SHOWN = 20
LEADERS_SHOWN = 10
TABLE_INTERVALS = 12  # the chart's table (read without JavaScript): the latest intervals
# Queue states in reading order; any other state a queue reports follows these.
STATE_ORDER = ("ready", "leased", "found", "done", "failed", "cancelled")
FINISHED_STATES = ("found", "done", "failed", "cancelled")

# aggregate type -> (one, many), as a person names them
NOUNS = {
    "album": ("album", "albums"),
    "dltask": ("download task", "download tasks"),
    "urltask": ("URL task", "URL tasks"),
    "worker": ("worker", "workers"),
    "torrent": ("torrent", "torrents"),
    "torrentfile": ("torrent file", "torrent files"),
    "user": ("account", "accounts"),
    "token": ("token", "tokens"),
    "invite": ("invite", "invites"),
    "tracked": ("tracked torrent", "tracked torrents"),
    "trackeruser": ("tracker member", "tracker members"),
    "whitelist": ("client rule", "client rules"),
    "source": ("source", "sources"),
    "syncorder": ("sync order", "sync orders"),
    "sourcefile": ("source file", "source files"),
    "webhook": ("webhook", "webhooks"),
}
# event names that read badly as "<name> for <things>"
VERBS = {
    "torrents_found": "found torrents for",
    "dispatched": "handed out",
    "lease_renewed": "renewed the lease of",
    "not_found": "found no torrent for",
    "transferred": "recorded traffic of",
    "heartbeat_recorded": "recorded a heartbeat of",
}


def fragment_login_required(view: F) -> F:
    """For parts a page fetches (htmx, the chart): 401 to anonymous callers, never data.

    A redirect would hand htmx the login page to swap into the dashboard;
    HX-Redirect instead sends the whole browser tab to log in.
    """

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if viewer() is None:
            response = render_error_page(401, "authentication_required", "")
            response.headers["HX-Redirect"] = "/login?" + urlencode({"next": "/"})
            return response
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@bp.get("/")
@login_required
def home() -> str:
    """The dashboard: every panel rendered here, so it reads without JavaScript."""
    ctx = context()
    now = ctx.clock()
    figures = current_figures()
    intervals = throughput(stats.get_history(ctx.db))
    all_workers = sorted_workers(ctx.db, now, ctx.settings.workers.offline_after_seconds)
    return render_page(
        "dashboard/home.html",
        title="Dashboard",
        figures=figures,
        states=queue_columns(figures["queues"]),
        queues=queue_rows(figures["queues"]),
        throughput=intervals,
        throughput_rows=table_rows(intervals),
        history_minutes=int(stats.HISTORY_EVERY.total_seconds() // 60),
        workers=all_workers[:WORKERS_SHOWN],
        workers_total=len(all_workers),
        worker_leaders=worker_leaders(all_workers),
        members=stats.get_leaders(ctx.db, now),
        events=recent_events(ctx.db),
        site=site_of(ctx.db),
        sites=sites_with_lag(now),
        storage=storage_panel(),
        now=now,
    )


@bp.get("/dashboard/events")
@fragment_login_required
def events_fragment() -> Response:
    """The recent events list for htmx to swap in; 204 (nothing to swap) when none is newer."""
    db = context().db
    if newest_event_id(db) == request.args.get("after", ""):
        return Response(status=204)  # one id read: the usual answer of a poll
    events = recent_events(db)
    html = render_template("dashboard/_events.html", events=events, site=site_of(db))
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dashboard/throughput.json")
@fragment_login_required
def throughput_json() -> Response:
    """The chart's data: times (Unix seconds) and one series of finished work per hour each."""
    response = jsonify(throughput(stats.get_history(context().db)))
    response.headers["Cache-Control"] = "no-store"
    return response


def current_figures() -> dict[str, Any]:
    """The figures GET /stats answers, by the same call, so the two always agree."""
    ctx = context()
    return stats.get_stats(ctx.db, ctx.clock(), stale=is_warming(get_warming_state(ctx.db)))


def queue_columns(queues: dict[str, dict[str, int]]) -> list[str]:
    """Every state some queue reports: the usual ones in life-cycle order, then the rest."""
    seen = {state for states in queues.values() for state in states}
    known = [state for state in STATE_ORDER if state in seen or state in stats.QUEUE_STATES]
    return known + sorted(seen - set(known))


def queue_rows(queues: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Each queue with its counts, its total, and how much of it is finished (any end state)."""
    return [
        {
            "name": name,
            "counts": counts,
            "total": sum(counts.values()),
            "finished": sum(counts.get(state, 0) for state in FINISHED_STATES),
        }
        for name, counts in queues.items()
    ]


def throughput(points: list[Doc]) -> dict[str, Any]:
    """Finished work per hour between consecutive history points, per queue kind.

    A count that fell (a rebuild, a deletion) counts as zero for its interval,
    never as negative work. Failed series appear only for kinds that ever failed.
    """
    kinds = sorted({kind for point in points for kind in point.get("done", {})})
    failing = sorted({k for p in points for k, n in p.get("failed", {}).items() if n})
    series = [("done", kind) for kind in kinds] + [("failed", kind) for kind in failing]
    times: list[int] = []
    values: list[list[float]] = [[] for _ in series]
    for before, after in zip(points, points[1:], strict=False):
        hours = (parse_iso(after["at"]) - parse_iso(before["at"])).total_seconds() / 3600
        if hours <= 0:
            continue
        times.append(int(parse_iso(after["at"]).timestamp()))
        for column, (outcome, kind) in zip(values, series, strict=True):
            grown = after[outcome].get(kind, 0) - before[outcome].get(kind, 0)
            column.append(round(max(0, grown) / hours, 1))
    return {
        "times": times,
        "series": [
            {"label": f"{kind} {outcome} per hour", "kind": kind, "outcome": outcome, "values": v}
            for (outcome, kind), v in zip(series, values, strict=True)
        ],
    }


def table_rows(intervals: dict[str, Any]) -> list[dict[str, Any]]:
    """The latest intervals, newest first, as rows of the chart's table."""
    rows = []
    for index in range(len(intervals["times"]) - 1, -1, -1)[:TABLE_INTERVALS]:
        at = datetime.fromtimestamp(intervals["times"][index], tz=UTC)
        rows.append({"at": iso(at), "values": [s["values"][index] for s in intervals["series"]]})
    return rows


def sorted_workers(db: Database, now: datetime, offline_after: float) -> list[dict[str, Any]]:
    """Every worker, online ones first, then by last sign of life, newest first."""
    workers = list_workers(db, now, offline_after)
    for worker in workers:
        seen = worker["last_seen"]
        worker["ago"] = ago((now - parse_iso(seen)).total_seconds()) if seen else "never"
    workers.sort(key=lambda w: w["last_seen"] or "", reverse=True)
    workers.sort(key=lambda w: not w["online"])
    return workers


def worker_leaders(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers that finished most tasks (only those that finished any)."""
    ranked = [w for w in workers if w["tasks_done"] or w["tasks_failed"]]
    ranked.sort(key=lambda w: (-w["tasks_done"], w["tasks_failed"], w["name"]))
    return ranked[:LEADERS_SHOWN]


def ago(seconds: float) -> str:
    """A duration in words a person reads at a glance: "12 s ago", "3 min ago", "2 h ago"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def sites_with_lag(now: datetime) -> list[dict[str, Any]]:
    """Every configured site with its state and, per flow, pending events and time since success.

    What /stats tells anyone; the last error (which may name hosts and paths)
    only to admins, who alone may read GET /api/sites.
    """
    ctx = context()
    person = viewer()
    admin = person is not None and has_role(person, ADMIN)
    sites = []
    for site in site_statuses(ctx.db, ctx.settings, now):
        flows = lag(site, now)
        for flow in site["flows"]:
            seconds = flows[flow]["seconds_since_success"]
            flows[flow]["ago"] = "never" if seconds is None else ago(seconds)
            flows[flow]["error"] = site["flows"][flow]["last_error"] if admin else None
        sites.append({**site, "lag": {flow: flows[flow] for flow in site["flows"]}})
    return sites


def storage_panel() -> dict[str, Any]:
    """What GET /api/storage answers, by the same call, so the two always agree.

    Local paths and missing files' names only to admins (as GET /api/storage,
    which only workers and admins may call); every person sees the numbers.
    An ingest volume is named by its absolute path, so others see it as
    "ingest volume 1", "ingest volume 2"… (opaque_volume_names).
    """
    figures = current_storage()
    person = viewer()
    if person is None or not has_role(person, ADMIN):
        opaque_volume_names(figures["roots"])
    return figures


def opaque_volume_names(roots: list[dict[str, Any]]) -> None:
    """Hide local paths: ingest volumes renamed by their place, paths and examples cleared."""
    number = 0
    for root in roots:
        if root["kind"] == INGEST:
            number += 1
            root["name"] = f"ingest volume {number}"
        root["path"] = None
        if root["last_check"]:
            root["last_check"].update(path=None, examples=[], mismatched_examples=[])


def recent_events(db: Database) -> list[dict[str, Any]]:
    """The newest events of the log, newest first, each told in words."""
    rows = _newest_events(db, RECENT_EVENTS, include_docs=True)
    return [describe_event(row["doc"]) for row in rows if row.get("doc")]


def newest_event_id(db: Database) -> str:
    """The id of the log's newest event ("" when it has none), without reading its body."""
    rows = _newest_events(db, 1)
    return str(rows[0]["id"]) if rows else ""


def _newest_events(db: Database, limit: int, **params: Any) -> list[dict[str, Any]]:
    """The newest rows of the log: event ids start with their UTC time
    (app/store/events.py new_event_id), so a descending `_all_docs` read of the
    `ev:` range gives the latest in one short read."""
    log_db = event_log(db)
    rows: list[dict[str, Any]] = log_db.server.get_json(
        f"{log_db.path}/_all_docs",
        descending=True,
        startkey=prefix_end(EVENT_PREFIX),
        endkey=EVENT_PREFIX,
        limit=limit,
        **params,
    )["rows"]
    return rows


def describe_event(event: Doc) -> dict[str, Any]:
    """One event for a person: when, who, and what ("leased 3 albums"), never its data.

    Data stays out: the log also records accounts and tokens, and a member
    needs no more than what happened to how many things. A change of one album
    links to its page.
    """
    changes = event.get("changes") or []
    by_name: dict[str, list[Doc]] = {}
    for change in changes:
        by_name.setdefault(str(change.get("name", "")), []).append(change)
    what = " and ".join(f"{verb_phrase(name)} {count_things(of)}" for name, of in by_name.items())
    albums = [c["aggregate"] for c in changes if c.get("aggregate", "").startswith("album:")]
    return {
        "id": event["_id"],
        "at": event.get("at", ""),
        "actor": event.get("actor", ""),
        "site": event.get("site", ""),
        "what": what or str(event.get("name", "")).replace("_", " "),
        "album": albums[0].split(":", 1)[1] if len(changes) == 1 and albums else None,
    }


def verb_phrase(name: str) -> str:
    """Say what was done: "leased", "found torrents for", "lease expired for"."""
    if name in VERBS:
        return VERBS[name]
    return name if "_" not in name else name.replace("_", " ") + " for"


def count_things(changes: list[Doc]) -> str:
    """Say how many aggregates of each type changed: "3 albums and 1 download task"."""
    counts: dict[str, int] = {}
    for change in changes:
        kind = str(change.get("aggregate", "")).split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    parts = []
    for kind, count in counts.items():
        one, many = NOUNS.get(kind, (kind, kind))
        parts.append(f"{count:,} {one if count == 1 else many}")
    return ", ".join(parts) or "nothing"
