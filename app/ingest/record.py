"""Ingest: record what a batch of listings (directories or loose files on disk) holds.

The scanner sends one listing per top-level directory or loose file, alone or
several at once in a batch. A batch is matched together (app/ingest/match.py:
two keyed view reads and one read of candidates for all of it) and recorded
together (one commit: events, then projections). Every match is recorded:
the torrent is `located` at the listing's path, and each of its download
tasks is `filled` with that path. Recording again what is already recorded
writes nothing, so re-scanning a volume changes nothing, and a directory
found at a new path records the move.

A batch has the effect of its listings sent one after another, in order.
When two listings of a batch lead to decisions on the same torrent or task
(the same data in two directories, the same listing twice), the batch is
committed in consecutive rounds, each deciding an aggregate at most once and
deciding on the state the rounds before it left: the later listing sees the
earlier one's record, exactly as if it had been sent after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.ingest.match import Evaluation, match_listings
from app.ingest.parse import FAILED, Listing
from app.ingest.report import build_report
from app.queues import downloads
from app.registry.keys import torrent_doc_id
from app.store.commit import Outcome, check_none_lost, commit
from app.store.couch import Database
from app.store.events import Decision, Doc
from app.timeutil import iso

Plan = tuple[list[tuple[str, Decision]], dict[str, tuple[str, int]]]


def _files_map(evaluation: Evaluation) -> list[str] | None:
    """The listing's names of the torrent's files, only where any differs from the torrent's."""
    own = [f["path"] for f in evaluation.doc["files"]]
    return None if evaluation.local_files == own else evaluation.local_files


def located_decision(
    listing: Listing, files: list[str] | None, verification: dict[str, Any] | None, now: datetime
) -> Decision:
    """Record where a torrent's files live, unless that (and its verification) is known.

    A new path starts unverified unless this listing carries a verification;
    the same path keeps the verification it had.
    """

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        current = state.get("location") or {}
        place = (listing.path, listing.kind, files)
        same = (current.get("path"), current.get("kind"), current.get("files")) == place
        if same and (verification is None or current.get("verified") == verification):
            return None
        data: dict[str, Any] = {"path": listing.path, "kind": listing.kind}
        if files is not None:
            data["files"] = files
        data["verified"] = verification
        data["verified_at"] = iso(now) if verification is not None else None
        return "located", data

    return decide


def verification_failed_decision(listing: Listing, verification: dict[str, Any]) -> Decision:
    """Record that the data at this path fails the torrent's piece hashes (once per piece)."""
    data = {"path": listing.path, **verification}
    data.pop("status", None)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return None
        last = state.get("last_failed_verification") or {}
        location = state.get("location") or {}
        known = (last.get("path"), last.get("piece")) == (listing.path, data["piece"])
        shown = (
            location.get("path") != listing.path
            or (location.get("verified") or {}).get("status") == FAILED
        )
        return None if known and shown else ("verification_failed", data)

    return decide


def plan_listing(listing: Listing, evaluations: list[Evaluation], now: datetime) -> Plan:
    """The decisions a listing leads to, and the site ref of each download task in them."""
    decisions: list[tuple[str, Decision]] = []
    tasks: dict[str, tuple[str, int]] = {}
    for ev in evaluations:
        doc_id = torrent_doc_id(ev.info_hash)
        if ev.matched:
            files = _files_map(ev)
            decisions.append((doc_id, located_decision(listing, files, ev.verification, now)))
            for site in ev.doc["sites"]:
                task_id = downloads.task_doc_id(site["site"], site["torrentId"])
                if task_id not in tasks:
                    tasks[task_id] = (site["site"], site["torrentId"])
                    decisions.append((task_id, downloads.fill_decision(listing.path, ev.info_hash)))
        elif ev.fits and ev.verification is not None:
            decisions.append((doc_id, verification_failed_decision(listing, ev.verification)))
    return decisions, tasks


def rounds(plans: Sequence[Plan]) -> list[list[int]]:
    """Split a batch into consecutive runs of listings that touch no aggregate twice."""
    runs: list[list[int]] = []
    touched: set[str] = set()
    for index, (decisions, _) in enumerate(plans):
        aggregates = {aggregate for aggregate, _ in decisions}
        if not runs or aggregates & touched:
            runs.append([])
            touched = set()
        runs[-1].append(index)
        touched |= aggregates
    return runs


def ingest_listings(
    db: Database, listings: Sequence[Listing], *, actor: str, now: datetime
) -> list[dict[str, Any]]:
    """Match a batch of listings and record every match (but dry runs'); a report for each.

    Raises ConcurrencyError when other writers kept winning an aggregate; the
    rounds before it stay recorded, and sending the batch again is safe.
    """
    evaluations, task_states = match_listings(db, listings)
    plans = [plan_listing(li, evs, now) for li, evs in zip(listings, evaluations, strict=True)]
    states: dict[str, Doc] = {torrent_doc_id(ev.info_hash): ev.doc for e in evaluations for ev in e}
    states.update(task_states)
    unread = {agg for decisions, _ in plans for agg, _ in decisions if agg not in states}
    found = db.get_many(unread)
    states.update((agg, found.get(agg, {})) for agg in unread)  # {}: known not to exist
    results: list[dict[str, Outcome]] = [{} for _ in listings]
    for run in rounds(plans):
        _record_round(db, listings, plans, run, states, results, actor=actor, now=now)
    return [
        build_report(listing, evs, res, tasks)
        for listing, evs, res, (_, tasks) in zip(listings, evaluations, results, plans, strict=True)
    ]


def _record_round(
    db: Database,
    listings: Sequence[Listing],
    plans: Sequence[Plan],
    run: list[int],
    states: dict[str, Doc],
    results: list[dict[str, Outcome]],
    *,
    actor: str,
    now: datetime,
) -> None:
    """Commit one round's decisions at once; dry runs are decided on the same states, unwritten."""
    for i in run:
        if listings[i].dry_run:
            results[i] = {agg: _dry_outcome(agg, decide, states) for agg, decide in plans[i][0]}
    real = [decision for i in run if not listings[i].dry_run for decision in plans[i][0]]
    if not real:
        return
    outcomes = commit(db, real, actor=actor, now=now, states=states)
    check_none_lost(outcomes)
    by_aggregate = {o.aggregate: o for o in outcomes}
    for i in run:
        if not listings[i].dry_run:
            results[i] = {agg: by_aggregate[agg] for agg, _ in plans[i][0]}
    states.update((o.aggregate, o.state or {}) for o in outcomes)


def ingest_listing(db: Database, listing: Listing, *, actor: str, now: datetime) -> dict[str, Any]:
    """Match one listing and record every match (unless it is a dry run); return the report."""
    [report] = ingest_listings(db, [listing], actor=actor, now=now)
    return report


def _dry_outcome(aggregate: str, decide: Decision, states: dict[str, Doc]) -> Outcome:
    """What a decision would do, as an Outcome with no event written."""
    state = states.get(aggregate) or None  # {}: known not to exist
    return Outcome(aggregate, decide(state) is not None, state)
