"""Download tasks: a torrent on a site that a seedbox worker should fetch.

Created when a metadata worker finds an album's torrent (never twice for the
same site and torrent id), leased per site, and filled with the local path
where its files landed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from app.couch import Database
from app.events import Decision, Doc, check_none_lost, commit, projector
from app.ids import stable_int_id
from app.leasing import READY, QueueLeaser, apply_lease_event

DONE = "done"
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


@projector("dltask")
def apply_task_event(state: Doc, event: Doc) -> None:
    if apply_lease_event(state, event):
        return
    name, data = event["name"], event["data"]
    if name == "created":
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
        state.update(state=DONE, path=data["path"], filled_at=event["at"], lease=None)


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
        if state is None or (state.get("state") == DONE and state.get("path") == path):
            return None
        return "filled", {"path": path}

    return decide
