"""Registering what workers learned: uploads merged into torrents; torrents made unavailable."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.errors import SiteTorrentConflictError, TorrentNotFoundError
from app.queues import downloads
from app.queues.downloads import TorrentRef
from app.registry.aggregate import (
    Upload,
    merge_decision,
    task_decision,
    torrent_file_decision,
    unavailable_decision,
)
from app.registry.keys import torrent_doc_id, torrent_file_doc_id
from app.registry.queries import find_by_site, public_torrent
from app.store.commit import Outcome, check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.tracker import accounts as tracker_accounts


def check_site_free(db: Database, ref: TorrentRef, info_hash: str) -> None:
    """Refuse a site torrent id that the registry already knows under another info hash."""
    rows = db.view("torrents", "by_site_torrent", key=[ref.host, ref.torrent_id])
    others = [row["id"].split(":", 1)[1] for row in rows if row["id"] != torrent_doc_id(info_hash)]
    if others:
        raise SiteTorrentConflictError(
            f"{ref.host} torrent {ref.torrent_id} is registered with another info hash.",
            site=ref.host,
            torrentId=ref.torrent_id,
            info_hash=others[0],
        )


def _check_task_link(task: Doc | None, ref: TorrentRef, info_hash: str) -> None:
    linked = (task or {}).get("info_hash")
    if linked and linked != info_hash:
        raise SiteTorrentConflictError(
            f"The download task of {ref.host} torrent {ref.torrent_id} is linked elsewhere.",
            site=ref.host,
            torrentId=ref.torrent_id,
            info_hash=linked,
        )


def register_upload(db: Database, upload: Upload, *, actor: str, now: datetime) -> dict[str, Any]:
    """Merge one upload into its torrent and link the download task; report what changed.

    Raises SiteTorrentConflictError (nothing written) when the site's torrent
    id belongs to another info hash already.
    """
    info_hash = upload.info_hash
    doc_id = torrent_doc_id(info_hash)
    task_id = downloads.task_doc_id(upload.ref.host, upload.ref.torrent_id) if upload.ref else None
    if upload.ref is not None:
        check_site_free(db, upload.ref, info_hash)
    states = db.get_many([doc_id] + ([task_id] if task_id else []))
    if upload.ref is not None and task_id is not None:
        _check_task_link(states.get(task_id), upload.ref, info_hash)
    unavailable = bool((states.get(doc_id) or {}).get("unavailable"))
    decisions: list[tuple[str, Decision]] = [(doc_id, merge_decision(upload))]
    if task_id is not None:
        decisions.append((task_id, task_decision(info_hash, unavailable)))
    decisions.append(tracker_accounts.registry_decision(info_hash, _upload_name(upload)))
    if upload.torrent is not None:
        decisions.append((torrent_file_doc_id(info_hash), torrent_file_decision(upload.torrent)))
    outcomes = commit(db, decisions, actor=actor, now=now, states=states)
    check_none_lost(outcomes)
    if outcomes[0].recorded:
        refresh_matching_index(db)
    stored = upload.torrent is not None and outcomes[-1].recorded
    tracked = 1 + (upload.torrent is not None)  # the tracker's and the file's outcomes
    return _upload_report(upload, outcomes[:-tracked], stored)


MATCHING_VIEWS = ("by_file", "by_top_dir")


def refresh_matching_index(db: Database) -> None:
    """Bring the matching views up to date before a registration is answered.

    The matcher reads them stale (app/ingest/match.py): every recorded match
    rewrites a torrent, and re-indexing on every read would cost more than
    the look-ups. Refreshing here, where torrents are added or their files
    change, means a stale read still sees every registered torrent. Both views
    are read: pouchdb-server keeps an index per view, Apache CouchDB one per
    design document (`matching` holds only these two, which must be fresh together).
    """
    for view in MATCHING_VIEWS:
        db.view("matching", view, limit=0)


def _upload_name(upload: Upload) -> str:
    source = upload.torrent or upload.gazelle
    return source.name if source is not None else upload.info_hash


def _upload_report(upload: Upload, outcomes: list[Outcome], stored: bool) -> dict[str, Any]:
    torrent = outcomes[0]
    assert torrent.state is not None
    status = "unchanged"
    if torrent.event is not None:
        status = "registered" if torrent.event["name"] == "registered" else "updated"
    report: dict[str, Any] = {"info_hash": torrent.state["info_hash"], "status": status}
    if upload.torrent is not None:
        report["torrent_file"] = "stored" if stored else "already_stored"
    report["tasks"] = [_task_status(o, upload.ref) for o in outcomes[1:] if upload.ref]
    report["torrent"] = public_torrent(torrent.state)
    return report


def _task_status(outcome: Outcome, ref: TorrentRef) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": ref.host, "torrentId": ref.torrent_id}
    if outcome.state is None:
        entry["status"] = "no_task"
    elif outcome.event is not None:
        entry["status"] = "cancelled" if outcome.event["name"] == "cancelled" else "linked"
    else:
        entry["status"] = "cancelled" if outcome.state.get("state") == "cancelled" else "linked"
    return entry


def register_uploads(
    db: Database, uploads: Iterable[Upload], *, actor: str, now: datetime, batch: int = 1000
) -> int:
    """Merge many uploads in batches (imports, benchmarks); return how many events were written.

    The bulk equivalent of register_upload: the same decisions, one commit per
    batch. It skips the per-upload view check for site conflicts (a linked
    download task still refuses another info hash, silently), and it keeps no
    .torrent files: give it Gazelle data with info hashes.
    """
    written = 0
    pending: dict[str, Upload] = {}
    for upload in uploads:
        pending[upload.info_hash] = upload
        if len(pending) >= batch:
            written += _register_batch(db, list(pending.values()), actor, now)
            pending = {}
    if pending:
        written += _register_batch(db, list(pending.values()), actor, now)
    return written


def _register_batch(db: Database, uploads: list[Upload], actor: str, now: datetime) -> int:
    decisions: list[tuple[str, Decision]] = []
    for upload in uploads:
        decisions.append((torrent_doc_id(upload.info_hash), merge_decision(upload)))
        decisions.append(tracker_accounts.registry_decision(upload.info_hash, _upload_name(upload)))
        if upload.ref is not None:
            task_id = downloads.task_doc_id(upload.ref.host, upload.ref.torrent_id)
            decisions.append((task_id, downloads.link_decision(upload.info_hash)))
    outcomes = commit(db, decisions, actor=actor, now=now)
    check_none_lost(outcomes)
    if any(o.recorded and o.aggregate.startswith("torrent:") for o in outcomes):
        refresh_matching_index(db)
    return sum(1 for o in outcomes if o.recorded)


def mark_unavailable(
    db: Database, info_hash: str, reason: str | None, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Mark a torrent trumped or deleted and cancel its download tasks (never leased again).

    Raises TorrentNotFoundError for an unknown info hash. Again changes nothing.
    """
    doc_id = torrent_doc_id(info_hash)
    torrent = db.get_or_none(doc_id)
    if torrent is None:
        raise TorrentNotFoundError(f"No torrent has info hash {info_hash}.", info_hash=info_hash)
    refs = [TorrentRef(s["site"], s["torrentId"]) for s in torrent["sites"]]
    decisions: list[tuple[str, Decision]] = [(doc_id, unavailable_decision(reason))]
    cancel = downloads.cancel_decision(info_hash, reason)
    decisions += [(downloads.task_doc_id(r.host, r.torrent_id), cancel) for r in refs]
    outcomes = commit(db, decisions, actor=actor, now=now, states={doc_id: torrent})
    check_none_lost(outcomes)
    state = outcomes[0].state
    assert state is not None
    return {
        "info_hash": info_hash,
        "recorded": outcomes[0].recorded,
        "tasks": [_cancel_status(o, r) for o, r in zip(outcomes[1:], refs, strict=True)],
        "torrent": public_torrent(state),
    }


def _cancel_status(outcome: Outcome, ref: TorrentRef) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": ref.host, "torrentId": ref.torrent_id}
    if outcome.state is None:
        entry["status"] = "no_task"
    elif outcome.recorded:
        entry["status"] = "cancelled"
    else:  # cancelled before, or done: a finished download stays done
        entry["status"] = (
            "already_cancelled"
            if outcome.state.get("state") == "cancelled"
            else outcome.state["state"]
        )
    return entry


def mark_site_torrent_unavailable(
    db: Database, ref: TorrentRef, reason: str | None, *, actor: str, now: datetime
) -> dict[str, Any]:
    """As mark_unavailable, by site and torrent id; a task without a torrent is cancelled too.

    Raises TorrentNotFoundError when neither a torrent nor a download task is known.
    """
    torrent = find_by_site(db, ref)
    if torrent is not None:
        return mark_unavailable(db, torrent["info_hash"], reason, actor=actor, now=now)
    task_id = downloads.task_doc_id(ref.host, ref.torrent_id)
    cancel = downloads.cancel_decision(None, reason)
    [outcome] = commit(db, [(task_id, cancel)], actor=actor, now=now)
    if outcome.state is None:
        raise TorrentNotFoundError(
            f"No torrent and no download task is known for {ref.host} torrent {ref.torrent_id}.",
            site=ref.host,
            torrentId=ref.torrent_id,
        )
    check_none_lost([outcome])
    return {
        "info_hash": None,
        "recorded": outcome.recorded,
        "tasks": [_cancel_status(outcome, ref)],
        "torrent": None,
    }
