"""Ingest reports: what the coordinator tells the scanner about one listing.

The shape is the same for a single listing and for each listing of a batch.
"""

from __future__ import annotations

import collections
from typing import Any

from app.ingest.match import Evaluation
from app.ingest.parse import Listing
from app.queues import downloads
from app.registry.keys import torrent_doc_id
from app.store.commit import Outcome
from app.store.events import Doc

MATCHED, NO_MATCH, SEVERAL_MATCHED = "matched", "no_match", "several_matched"
MAX_REASONS = 20
MAX_REPORTED = 20


def build_report(
    listing: Listing,
    evaluations: list[Evaluation],
    results: dict[str, Outcome],
    tasks: dict[str, tuple[str, int]],
) -> dict[str, Any]:
    """The report on one listing, from its evaluations and what its decisions did."""
    matched = [ev for ev in evaluations if ev.matched]
    outcome = {0: NO_MATCH, 1: MATCHED}.get(len(matched), SEVERAL_MATCHED)
    # Extra files are those no matching torrent claims (none are extra without a match).
    claimed = {path for ev in matched for path in ev.local_files}
    extra = [f.path for f in listing.files if f.path not in claimed] if matched else []
    return {
        "path": listing.path,
        "kind": listing.kind,
        "outcome": outcome,
        "reason": _outcome_reason(outcome, evaluations, len(matched)),
        "dry_run": listing.dry_run,
        "matched": [_matched_entry(ev, results, tasks, listing.dry_run) for ev in matched],
        "rejected": [_rejected_entry(ev) for ev in evaluations if not ev.matched][:MAX_REPORTED],
        "extra_files": {"count": len(extra), "paths": extra[:MAX_REPORTED]},
    }


def _outcome_reason(outcome: str, evaluations: list[Evaluation], matches: int) -> str:
    if outcome == MATCHED:
        return "One torrent has every one of its files here, with the same sizes."
    if outcome == SEVERAL_MATCHED:
        return f"{matches} torrents have every one of their files here; each is recorded."
    if not evaluations:
        return "No registered torrent shares a file (name and size) or the name with this."
    return f"{len(evaluations)} candidate torrent(s) did not match: see rejected."


def _torrent_summary(doc: Doc) -> dict[str, Any]:
    return {
        "info_hash": doc["info_hash"],
        "name": doc["name"],
        "title": doc["title"],
        "sites": [{"site": s["site"], "torrentId": s["torrentId"]} for s in doc["sites"]],
        "has_torrent_file": doc["has_torrent_file"],
        "unavailable": bool(doc.get("unavailable")),
    }


def _matched_entry(
    ev: Evaluation, results: dict[str, Outcome], tasks: dict[str, tuple[str, int]], dry: bool
) -> dict[str, Any]:
    torrent = results[torrent_doc_id(ev.info_hash)]
    entry = _torrent_summary(ev.doc)
    entry["location"] = (
        "unchanged" if not torrent.recorded else "would_record" if dry else "recorded"
    )
    entry["verified"] = ev.verification
    entry["tasks"] = []
    for site in ev.doc["sites"]:
        task_id = downloads.task_doc_id(site["site"], site["torrentId"])
        if task_id in tasks:
            entry["tasks"].append(_task_entry(site, results[task_id], dry))
    return entry


def _task_entry(site: Doc, outcome: Outcome, dry: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": site["site"], "torrentId": site["torrentId"]}
    state = outcome.state
    if state is None:
        entry["status"] = "no_task"
    elif outcome.recorded:
        entry["status"] = "would_fill" if dry else "filled"
    elif state.get("state") == downloads.CANCELLED:
        entry["status"] = "cancelled"
    else:
        entry["status"] = "already_filled"
    return entry


def _rejected_entry(ev: Evaluation) -> dict[str, Any]:
    entry = _torrent_summary(ev.doc)
    counts = collections.Counter(r["problem"] for r in ev.reasons)
    entry.update(
        missing=counts["missing"],
        wrong_size=counts["wrong_size"],
        reasons=ev.all_reasons()[:MAX_REASONS],
    )
    return entry
