"""Download tasks: a torrent on a site that a seedbox worker should fetch.

Created when a metadata worker finds an album's torrent (never twice for the
same site and torrent id), leased per site, linked to its registered torrent
(`torrent_linked`), and filled with the local path where its files landed. A
task whose torrent was trumped or deleted on the site is `cancelled`: the
queue view serves only "ready" tasks, so it is never leased again.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from app.ids import stable_int_id
from app.queues.holders import READY, apply_lease_event
from app.queues.leasing import QueueLeaser
from app.store.commit import check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc

DONE = "done"
CANCELLED = "cancelled"
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclasses.dataclass(frozen=True)
class TorrentRef:
    """A torrent on a site: the site's hostname and its torrent id there."""

    host: str
    torrent_id: int


def site_host(site: str) -> str | None:
    """The hostname of a site given as a URL ("https://pth.me/") or a bare host ("pth.me").

    None when there is no usable DNS name or IPv4 address in it: the host names
    a queue and is part of task ids, so "%%%" or "[::1" must not become one.
    """
    text = site.strip()
    if not text:
        return None
    try:
        parsed = urlsplit(text if "://" in text else f"//{text}")
        host = (parsed.hostname or "").rstrip(".")
        host = host.encode("idna").decode("ascii").lower()  # bücher.de -> xn--bcher-kva.de
    except (ValueError, UnicodeError):  # "http://[::1" raises; so do empty IDNA labels
        return None
    if not host or len(host) > 253 or not all(_HOST_LABEL.match(p) for p in host.split(".")):
        return None
    return host


def queue_for(host: str) -> str:
    return f"download:{host}"


def task_doc_id(host: str, torrent_id: int) -> str:
    return f"dltask:{host}:{torrent_id}"


def task_int_id(host: str, torrent_id: int) -> int:
    return stable_int_id(host, str(torrent_id))


def public_task_ref(host: str, torrent_id: int) -> dict[str, Any]:
    return {"id": task_int_id(host, torrent_id), "site": host, "torrentId": torrent_id}


def apply_task_event(state: Doc, event: Doc) -> None:
    if apply_lease_event(state, event):
        return
    name, data = event["name"], event["data"]
    if name == "created" and event.get("concurrent"):
        # created at two sites while apart (the same torrent found for their albums)
        state["albums"] += [a for a in data["albums"] if a not in state["albums"]]
    elif name == "created":
        state.update(
            id=data["id"],
            site=data["site"],
            siteTorrentId=data["torrentId"],
            albums=list(data["albums"]),
            queue=queue_for(data["site"]),
            state=READY,
            queue_group=0,
            available_at=event["at"],
            lease=None,
            path=None,
        )
    elif name == "albums_linked":
        state["albums"] += [a for a in data["albums"] if a not in state["albums"]]
    elif name == "filled":
        # A cancelled task keeps its state (a late submission is recorded, not revived).
        if state["state"] != CANCELLED:
            state.update(state=DONE, lease=None)
        state.update(path=data["path"], filled_at=event["at"])
        if data.get("info_hash"):
            state["info_hash"] = data["info_hash"]
    elif name == "torrent_linked":
        state["info_hash"] = data["info_hash"]
    elif name == "cancelled":
        state.update(state=CANCELLED, lease=None, cancelled_at=event["at"])
        if data.get("info_hash"):
            state["info_hash"] = data["info_hash"]


def creation_decisions(found: Mapping[int, list[TorrentRef]]) -> list[tuple[str, Decision]]:
    """One decision per distinct torrent: create its task, or link further albums to it."""
    albums_by_torrent: dict[TorrentRef, list[int]] = {}
    for album_id, refs in found.items():
        for ref in refs:
            linked = albums_by_torrent.setdefault(ref, [])
            if album_id not in linked:  # one album may list the same torrent twice
                linked.append(album_id)
    return [
        (task_doc_id(ref.host, ref.torrent_id), _create_or_link(ref, album_ids))
        for ref, album_ids in albums_by_torrent.items()
    ]


def _create_or_link(ref: TorrentRef, album_ids: list[int]) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            data = {
                "id": task_int_id(ref.host, ref.torrent_id),
                "site": ref.host,
                "torrentId": ref.torrent_id,
                "albums": album_ids,
            }
            return "created", data
        new = [a for a in album_ids if a not in state.get("albums", [])]
        return ("albums_linked", {"albums": new}) if new else None

    return decide


def lease_downloads(
    leaser: QueueLeaser, host: str, holder: str, rows: int, now: datetime, days: float
) -> list[dict[str, Any]]:
    """Lease up to `rows` download tasks of one site, in the original response shape."""
    docs = leaser.lease(queue_for(host), holder, rows, now, timedelta(days=days), actor=holder)
    return [{"id": doc["id"], "siteTorrentId": doc["siteTorrentId"]} for doc in docs]


def submit_downloads(
    db: Database, filled: Mapping[str, list[TorrentRef]], *, holder: str, now: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Mark tasks filled with the local path their files landed in; report per path.

    A task filled again with another path records the move; the same path again
    changes nothing. Unknown tasks are reported and skipped; a torrent listed
    under two paths counts under the last one and is reported under the others.
    """
    pairs = [(path, ref) for path, refs in filled.items() for ref in dict.fromkeys(refs)]
    last_path = {task_doc_id(ref.host, ref.torrent_id): path for path, ref in pairs}
    stored = db.get_many(last_path)
    report: dict[str, list[dict[str, Any]]] = {path: [] for path in filled}
    decisions: list[tuple[str, Decision]] = []
    for path, ref in pairs:
        doc_id = task_doc_id(ref.host, ref.torrent_id)
        entry: dict[str, Any] = {"site": ref.host, "torrentId": ref.torrent_id}
        if doc_id not in stored:
            entry.update(error="unknown_task", reason="No download task for this site and id.")
        elif last_path[doc_id] != path:
            entry.update(error="invalid_entry", reason="Listed under another path too.")
        else:
            entry["status"] = "filled"
            decisions.append((doc_id, _fill(path)))
        report[path].append(entry)
    check_none_lost(commit(db, decisions, actor=holder, now=now, states=stored))
    return report


def _fill(path: str) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or (state.get("state") in (DONE, CANCELLED) and state.get("path") == path):
            return None
        return "filled", {"path": path}

    return decide


def fill_decision(path: str, info_hash: str) -> Decision:
    """Ingest matched the task's torrent at `path`: fill it (or record the move).

    A cancelled task is left alone: its torrent is gone from the site, and the
    torrent aggregate records where the files are anyway.
    """

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("state") == CANCELLED:
            return None
        if state.get("state") == DONE and state.get("path") == path:
            return None
        return "filled", {"path": path, "info_hash": info_hash}

    return decide


def link_decision(info_hash: str) -> Decision:
    """Link the task to its registered torrent once; a task linked elsewhere stays as it is."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("info_hash"):
            return None
        return "torrent_linked", {"info_hash": info_hash}

    return decide


def cancel_decision(info_hash: str | None, reason: str | None = None) -> Decision:
    """Cancel a task that is still waiting or leased; done and cancelled tasks stay."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("state") in (DONE, CANCELLED):
            return None
        data: dict[str, Any] = {"reason": reason}
        if info_hash:
            data["info_hash"] = info_hash
        return "cancelled", data

    return decide
