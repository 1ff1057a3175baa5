"""replicate: one site's event log to another's ÷ raw `_replicate`; the projector ÷ raw `_changes`.

Two bundled servers play two sites. Site alpha's log is filled by the domain
operations the API calls (an import, leases of 10 albums, one result per
album: about 1.1 event documents per album), then the scheduler's own
replication job (`replicate_site`, push, accounts included) sends it to
site beta, and beta's projector (`catch_up_projections`) folds it. Figures,
from one run on the same two servers:

- event documents/s of the replication ÷ documents/s of a raw one-shot
  `_replicate` of as many plain documents between the same servers: >= 0.8
  (ours pays the `log/events` filter at the source, the log's validator at
  the target, and the check of both logs before it starts);
- event documents/s of beta's projector ÷ documents/s of reading beta's log
  through `_changes?include_docs=true` in pages of 1,000: >= 0.5 (the
  projector reads the same feed, then writes every projection it touches).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from app.config import load_settings
from app.processes import bundled
from app.projectors import register_projectors
from app.queues.albums import import_albums, lease_albums, submit_metadata
from app.queues.downloads import TorrentRef
from app.queues.leasing import QueueLeaser
from app.sites.links import site_links
from app.sites.replication import replicate_site
from app.store.catchup import catch_up_projections
from app.store.couch import CouchServer, Database
from app.store.setup import init_database
from app.timeutil import utcnow
from bench.harness import (
    JSON_HEADERS,
    drop_database,
    fill_plain_docs,
    inventory_rows,
    load_average,
    raw_bulk_docs_rate,
    read_model_designs,
    say,
    user_doc_count,
    verdict,
    write_results,
)

NAME = "replicate"
ALBUMS = {"full": 5_000, "quick": 1_000}
LEASE_ROWS = 10
REPLICATION_TARGET = 0.8
PROJECTION_TARGET = 0.5
PAGE = 1000


@contextlib.contextmanager
def two_servers() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="distleech-bench-replicate-") as tmp:
        with (
            bundled.running(Path(tmp) / "alpha") as alpha,
            bundled.running(Path(tmp) / "beta") as beta,
        ):
            yield alpha, beta


def site(url: str, name: str) -> Database:
    db = Database(CouchServer(url, timeout=300), f"bench_{name}", site=name)
    db.server.create_database(db.name)
    init_database(db, warm=False)
    return db


def fill_log(db: Database, albums: int) -> None:
    """What a site's log holds after its workers went through an inventory once."""
    now = utcnow()
    rows = [(i + 2, artist, title) for i, (artist, title) in enumerate(inventory_rows(0, albums))]
    import_albums(db, rows, actor="op", now=now)
    leaser = QueueLeaser(db)
    while leased := lease_albums(leaser, "worker", LEASE_ROWS, now, 60):
        for album in leased:
            ref = TorrentRef("passtheheadphones.me", album["id"] % 1_000_000)
            submit_metadata(db, {album["id"]: [ref]}, holder="worker", now=now, retry_minutes=60)


def count_changes(db: Database) -> int:
    """Per-aggregate changes in a log (an event document records one command's)."""
    return sum(1 for _ in db.companion("events").iter_view("log", "by_aggregate", page_size=5000))


def raw_replicate_rate(source_url: str, target_url: str, docs: int) -> float:
    """Docs/s of a one-shot `_replicate` of `docs` plain documents, run at the source."""
    source, target = f"bench_rawrep_{uuid.uuid4().hex[:8]}", f"bench_rawrep_{uuid.uuid4().hex[:8]}"
    fill_plain_docs(source_url, source, docs)
    requests.put(f"{target_url}/{target}", timeout=30).raise_for_status()
    body = {"source": f"{source_url}/{source}", "target": f"{target_url}/{target}"}
    try:
        started = time.perf_counter()
        answer = requests.post(
            f"{source_url}/_replicate", data=json.dumps(body), headers=JSON_HEADERS, timeout=3600
        )
        answer.raise_for_status()
        elapsed = time.perf_counter() - started
        if user_doc_count(target_url, target) != docs:
            raise RuntimeError(f"raw _replicate copied {user_doc_count(target_url, target)}")
    finally:
        drop_database(source_url, source)
        drop_database(target_url, target)
    return docs / elapsed


def raw_changes_rate(url: str, database: str) -> float:
    """Docs/s of reading a database's `_changes?include_docs=true` in pages."""
    session, since, seen = requests.Session(), "0", 0
    started = time.perf_counter()
    while True:
        params = {"since": since, "include_docs": "true", "limit": str(PAGE)}
        feed = session.get(f"{url}/{database}/_changes", params=params, timeout=300).json()
        seen += len(feed["results"])
        since = str(feed["last_seq"])  # an integer on pouchdb-server, opaque on CouchDB
        if len(feed["results"]) < PAGE:
            break
    return seen / (time.perf_counter() - started)


def run(quick: bool = False) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    albums = ALBUMS[mode]
    register_projectors()
    say(NAME, f"{albums:,} albums at site alpha; load average {load_average():.1f} at start")
    with two_servers() as (alpha_url, beta_url):
        alpha, beta = site(alpha_url, "alpha"), site(beta_url, "beta")
        began = time.perf_counter()
        fill_log(alpha, albums)
        events = user_doc_count(alpha_url, f"{alpha.name}_events")
        changes = count_changes(alpha)
        say(
            NAME,
            f"  alpha's log: {events:,} event documents in {time.perf_counter() - began:.0f} s",
        )
        settings = load_settings(
            {
                "site": {"name": "alpha"},
                "sites": {"beta": {"url": f"{beta_url}/{beta.name}_events", "direction": "push"}},
            },
            config_path=Path("/nonexistent/config.yaml"),
            environ={},
        )
        [link] = site_links(settings)
        raw = raw_replicate_rate(alpha_url, beta_url, events)
        began = time.perf_counter()
        status = replicate_site(alpha, link, settings, utcnow())
        replicated_seconds = time.perf_counter() - began
        flow = status["flows"]["push"]
        arrived = user_doc_count(beta_url, f"{beta.name}_events")
        raw_after = raw_replicate_rate(alpha_url, beta_url, events)
        began = time.perf_counter()
        projected = 0
        while repaired := catch_up_projections(beta):
            projected += repaired
        projector_seconds = time.perf_counter() - began
        raw_feed = raw_changes_rate(beta_url, f"{beta.name}_events")
        raw_writes = raw_bulk_docs_rate(beta_url, projected, designs=read_model_designs())

    rate = events / replicated_seconds
    projector_rate = events / projector_seconds
    ratio, projector_ratio = rate / raw, projector_rate / raw_feed
    complete = flow["state"] == "running" and arrived >= events and projected > 0
    ok = ratio >= REPLICATION_TARGET and projector_ratio >= PROJECTION_TARGET and complete
    say(
        NAME,
        f"replication {rate:,.0f} events/s = {ratio:.2f} x raw _replicate ({raw:,.0f} docs/s; "
        f"after: {raw_after:,.0f}); target >= {REPLICATION_TARGET}: "
        f"{verdict(ratio >= REPLICATION_TARGET)}",
    )
    say(
        NAME,
        f"projector at beta {projector_rate:,.0f} events/s ({projected:,} projections) = "
        f"{projector_ratio:.2f} x raw _changes ({raw_feed:,.0f} docs/s); target >= "
        f"{PROJECTION_TARGET}: {verdict(projector_ratio >= PROJECTION_TARGET)}",
    )
    say(
        NAME,
        f"  the projector wrote {projected:,} projections for {changes:,} changes; raw "
        f"_bulk_docs of as many documents into a database with the read model's design "
        f"documents takes {projected / raw_writes:.2f} s of its {projector_seconds:.2f} s",
    )
    say(NAME, f"  {arrived:,} of {events:,} events arrived; flow state {flow['state']}")
    figures = {
        "passed": ok,
        "albums": albums,
        "events": events,
        "events_per_s": rate,
        "raw_replicate_docs_per_s": raw,
        "raw_replicate_docs_per_s_after": raw_after,
        "ratio": ratio,
        "target": REPLICATION_TARGET,
        "projector_events_per_s": projector_rate,
        "projections_written": projected,
        "raw_changes_docs_per_s": raw_feed,
        "projector_ratio": projector_ratio,
        "changes": changes,
        "raw_bulk_docs_with_designs_per_s": raw_writes,
        "projector_target": PROJECTION_TARGET,
        "arrived": arrived,
    }
    write_results(NAME, figures, quick=quick)
    return figures
