"""What `GET /api/sites`, `distleech sites` and `/stats` show of every configured site.

Read-only: the scheduler's leader stores each flow's state after every
attempt (app/sites/replication.py); this module adds the configuration and
one state that only a reader can tell, "stopped": nothing has tried the flow
for longer than a running scheduler ever waits between attempts (no
scheduler runs, or it was never started since the site was added).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.sites.links import site_links
from app.sites.replication import PENDING_LIMIT, read_status
from app.store.couch import Database
from app.store.events import site_of
from app.timeutil import parse_iso

STATES = ("running", "retrying", "failing", "stopped")


def stopped_after(settings: Settings) -> timedelta:
    """How long without an attempt means that no scheduler replicates."""
    section = settings.scheduler
    return timedelta(
        seconds=section.replicate_max_backoff_seconds + 3 * section.replicate_seconds + 60
    )


def site_statuses(db: Database, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """One entry per configured site: direction, and per flow its state, pending, last outcomes."""
    sites = []
    for link in site_links(settings):
        stored = read_status(db, link.name).get("flows", {})
        flows = {flow: _flow(stored.get(flow, {}), settings, now) for flow in link.flows}
        sites.append(
            {
                "name": link.name,
                "url": link.remote.url,  # never with credentials
                "direction": link.direction,
                "state": _worst(flow["state"] for flow in flows.values()),
                "flows": flows,
            }
        )
    return sites


def _flow(stored: dict[str, Any], settings: Settings, now: datetime) -> dict[str, Any]:
    last_attempt = stored.get("last_attempt")
    state = stored.get("state", "stopped")
    if not last_attempt or now - parse_iso(last_attempt) > stopped_after(settings):
        state = "stopped"
    return {
        "state": state,
        "pending": stored.get("pending"),
        "pending_as_of": stored.get("pending_as_of"),
        "last_success": stored.get("last_success"),
        "last_attempt": last_attempt,
        "last_error": stored.get("last_error"),
        "failures": stored.get("failures", 0),
        "next_attempt": stored.get("next_attempt"),
        "events_written": stored.get("events_written", 0),
    }


def _worst(states: Any) -> str:
    """The state of a site: its worst flow's (stopped > failing > retrying > running)."""
    return max(states, key=STATES.index, default="stopped")


def lag(site: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A site's lag for /stats: events pending each way and seconds since each last success."""
    out: dict[str, Any] = {"state": site["state"]}
    for flow, state in site["flows"].items():
        success = state["last_success"]
        out[flow] = {
            "pending": state["pending"],
            "seconds_since_success": (
                round((now - parse_iso(success)).total_seconds(), 1) if success else None
            ),
        }
    return out


def sites_summary(db: Database, settings: Settings, now: datetime) -> dict[str, Any]:
    """What /stats adds: this site's name and every other site's lag."""
    return {
        "site": site_of(db),
        "sites": {site["name"]: lag(site, now) for site in site_statuses(db, settings, now)},
    }


def sites_lines(summary: dict[str, Any]) -> list[str]:
    """The /stats lines: "Site: alpha", then one line per other site."""
    lines = [f"Site: {summary['site']}"]
    for name, site in summary["sites"].items():
        flows = [
            f"{flow} {_pending(state['pending'])} pending, last success "
            f"{_ago(state['seconds_since_success'])}"
            for flow, state in site.items()
            if flow != "state"
        ]
        lines.append(f"Site {name}: {site['state']}; " + "; ".join(flows))
    return lines


def _pending(count: int | None) -> str:
    if count is None:
        return "unknown"
    return f"{count:,}+" if count >= PENDING_LIMIT else f"{count:,}"


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:,.0f} s ago"


def format_sites(own: str, statuses: list[dict[str, Any]]) -> str:
    """`distleech sites`: one block per site, one line per flow."""
    if not statuses:
        return f"This site: {own}. No other site is configured (config.yaml `sites:`)."
    lines = [f"This site: {own}"]
    for site in statuses:
        lines.append(f"{site['name']}  {site['url']}  {site['direction']}  {site['state']}")
        for flow, state in site["flows"].items():
            error = state["last_error"]
            said = f"  last error {error['at']} {error['code']}: {error['reason']}" if error else ""
            lines.append(
                f"  {flow:<4}  {state['state']:<8}  pending {_pending(state['pending'])}  "
                f"last success {state['last_success'] or 'never'}{said}"
            )
    return "\n".join(lines)
