"""Build design documents from designdocs/ and views/, and sync them idempotently.

File path = key path (the couchapp mapping):
  designdocs/<ddoc>.json                     the base document (everything but code)
  designdocs/<ddoc>/<key>.js                 a top-level function, e.g. validate_doc_update
  designdocs/<ddoc>/filters/<name>.js        a nested function, e.g. filters.<name>
  views/<ddoc>/<view>/map.js, reduce.js      views.<view>.map / .reduce
A reduce.js may hold just `_count`, `_sum` or `_stats` (built-ins run in Erlang).
A base document may say `"database": "peers"`: it then belongs to the tracker's
peers database instead of the main one (the key itself is not stored).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.store.couch import CouchError, CouchUnavailableError, Database, DocumentConflictError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository: app/<package>/<module>.py
DESIGNDOCS_DIR = ROOT / "designdocs"
VIEWS_DIR = ROOT / "views"
# A view query while its index builds waits this long (times 1 + the client's
# retries of a read), then asks again and logs that it still builds.
WARM_REQUEST_SECONDS = 15.0
WARM_RETRY_SECONDS = 1.0
WARM_SERVER_ERRORS = 5
# Not replicated, not a projection: where `distleech run` says how warm the indexes are.
WARMING_DOC_ID = "_local/warming"


def _set_path(doc: dict[str, Any], keys: list[str], value: str) -> None:
    node = doc
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _read_code(path: Path) -> str:
    """The function's source without its leading comment lines.

    Every .js file opens with a comment saying what it does and who uses it,
    but both servers evaluate the stored text as one expression, and pouchdb-server
    refuses one that starts with a comment ("does not eval to a function").
    """
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("//")):
        lines.pop(0)
    return "\n".join(lines)


def build_design_docs(
    designdocs_dir: Path = DESIGNDOCS_DIR, views_dir: Path = VIEWS_DIR, *, database: str = "main"
) -> dict[str, dict[str, Any]]:
    """Assemble the design documents of one database ("main" or "peers"); keyed by _id."""
    names = {p.stem for p in designdocs_dir.glob("*.json")}
    names |= {p.name for p in designdocs_dir.iterdir() if p.is_dir()}
    names |= {p.name for p in views_dir.iterdir() if p.is_dir()}
    docs = {}
    for name in sorted(names):
        base = designdocs_dir / f"{name}.json"
        doc: dict[str, Any] = json.loads(base.read_text(encoding="utf-8")) if base.exists() else {}
        if doc.pop("database", "main") != database:
            continue
        doc["_id"] = f"_design/{name}"
        doc.setdefault("language", "javascript")
        code_dir = designdocs_dir / name
        for js in sorted(code_dir.rglob("*.js")) if code_dir.is_dir() else []:
            _set_path(doc, list(js.relative_to(code_dir).with_suffix("").parts), _read_code(js))
        view_dir = views_dir / name
        for js in sorted(view_dir.glob("*/*.js")) if view_dir.is_dir() else []:
            _set_path(doc, ["views", js.parent.name, js.stem], _read_code(js))
        docs[doc["_id"]] = doc
    return docs


def _strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_rev"}


def sync_design_docs(db: Database, docs: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Write the design documents that differ from the stored ones; return their ids.

    As in couchdb-push: build the document, copy the stored _rev, compare, and
    write only on a difference, so a restart never rebuilds unchanged indexes.
    """
    wanted = docs if docs is not None else build_design_docs()
    stored = db.get_many(wanted.keys())
    changed = []
    for doc_id, doc in wanted.items():
        current = stored.get(doc_id)
        if current is not None and _strip_meta(current) == doc:
            continue
        to_write = dict(doc)
        if current is not None:
            to_write["_rev"] = current["_rev"]
        try:
            db.put(to_write)
        except DocumentConflictError:
            # Another process synced the same files at the same moment; theirs is ours.
            log.info("design document %s was written concurrently", doc_id)
            continue
        changed.append(doc_id)
    return changed


def warm_views(
    db: Database,
    docs: dict[str, dict[str, Any]] | None = None,
    *,
    say: Callable[[str], None] = log.info,
    progress: Callable[[str, int], None] | None = None,
    cancelled: threading.Event | None = None,
) -> None:
    """Query every view once so its index is built before users ask.

    Apache CouchDB builds all views of a design document together, but
    pouchdb-server keeps one index per view: each must be queried. A big
    index can take far longer than any request timeout to build, so a query
    that times out is not an error: the server keeps building, and the view
    is asked again (each wait says so) until it answers. `say` gets a line
    per view ("warming <db>/<ddoc>/<view>…", "… warm after N s");
    `progress(view, done)` is told before each view and after the last.
    """
    views = [
        (doc_id.removeprefix("_design/"), name, "reduce" in view)
        for doc_id, doc in (docs if docs is not None else build_design_docs()).items()
        for name, view in sorted((doc.get("views") or {}).items())
    ]
    cancelled = cancelled or threading.Event()
    for done, (ddoc, name, has_reduce) in enumerate(views):
        if cancelled.is_set():
            return
        label = f"{db.name}/{ddoc}/{name}"
        if progress is not None:
            progress(label, done)
        _warm_one(db, ddoc, name, has_reduce, label, say, cancelled)
    if progress is not None:
        progress("", len(views))


def _warm_one(
    db: Database,
    ddoc: str,
    view: str,
    has_reduce: bool,
    label: str,
    say: Callable[[str], None],
    cancelled: threading.Event,
) -> None:
    params: dict[str, Any] = {"limit": 0}
    if has_reduce:
        params["reduce"] = False
    started, server_errors = time.monotonic(), 0
    say(f"warming {label}…")
    while not cancelled.is_set():
        try:
            db.server.request(
                "GET",
                f"{db.path}/_design/{ddoc}/_view/{view}",
                params=params,
                timeout=WARM_REQUEST_SECONDS,
            )
            break
        except CouchUnavailableError as exc:
            # status 0: a timeout while the index builds (or a server too busy
            # building it to answer): wait on. A 5xx that repeats is a broken view.
            server_errors += exc.status >= 500
            if server_errors > WARM_SERVER_ERRORS:
                say(f"{label} not warmed: the server keeps failing it ({exc})")
                return
            if not cancelled.is_set():
                waited = time.monotonic() - started
                say(f"{label} still building after {waited:.0f} s ({exc.reason})")
            cancelled.wait(WARM_RETRY_SECONDS)
        except CouchError as exc:
            say(f"{label} not warmed: {exc}")
            return
    else:
        return  # cancelled: say nothing more
    say(f"{label} warm after {time.monotonic() - started:.0f} s")


def design_doc_targets(db: Database) -> list[tuple[Database, dict[str, dict[str, Any]]]]:
    """(database, its design docs) for the read model and its companion databases.

    Only databases that exist and have design docs: warming creates nothing.
    """
    targets = []
    for role in ("main", "events", "secrets", "peers"):
        database = db if role == "main" else db.companion(role)
        docs = build_design_docs(database=role)
        if docs and database.server.database_exists(database.name):
            targets.append((database, docs))
    return targets


class Warming:
    """Warm the indexes of several databases in a background thread, and say how far it got.

    Start-up must not wait for (or die on) an index that takes hours to
    build: the app serves meanwhile, and whoever asks (the log, /stats) sees
    which view is being built. `targets` are (database, its design docs) pairs:
    the read model, the event log and the tracker's peers database.
    """

    def __init__(
        self,
        targets: list[tuple[Database, dict[str, dict[str, Any]]]],
        *,
        say: Callable[[str], None] = log.info,
        record: Database | None = None,
    ) -> None:
        self.targets = [(db, docs) for db, docs in targets if docs]
        self.say = say
        self.record = record  # where the state is kept for /stats (a _local doc)
        self.total = sum(
            len(d.get("views") or {}) for _, docs in self.targets for d in docs.values()
        )
        self.warm = 0
        self.current = ""
        self.started = time.monotonic()
        self.finished: float | None = None
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._run, name="warm-views", daemon=True)

    def start(self) -> Warming:
        self._store()
        self.thread.start()
        return self

    def cancel(self) -> None:
        """Stop warming (the supervisor is stopping); the thread says nothing more."""
        self.cancelled.set()

    def _run(self) -> None:
        offset = 0
        for db, docs in self.targets:
            warm_views(
                db,
                docs,
                say=self.say,
                progress=functools.partial(self._at, offset=offset),
                cancelled=self.cancelled,
            )
            offset += sum(len(d.get("views") or {}) for d in docs.values())
        if self.cancelled.is_set():
            return
        self.finished = time.monotonic()
        self.current = ""
        self.say(f"all {self.total} indexes warm after {self.finished - self.started:.0f} s")
        self._store()

    def _at(self, view: str, done: int, *, offset: int = 0) -> None:
        self.current, self.warm = view, offset + done
        self._store()

    def state(self) -> dict[str, Any]:
        """What /stats shows: {"state": "warming"|"warm", "warm", "total", "current"}."""
        return {
            "state": "warm" if self.finished is not None else "warming",
            "warm": self.warm,
            "total": self.total,
            "current": self.current or None,
            "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }

    def _store(self) -> None:
        if self.record is None:
            return
        try:
            current = self.record.get_or_none(WARMING_DOC_ID)
            doc = {"_id": WARMING_DOC_ID, **self.state()}
            if current is not None:
                doc["_rev"] = current["_rev"]
            self.record.put(doc)
        except CouchError as exc:  # a busy server: the log still says where we are
            log.debug("cannot record the warming state: %s", exc)


def is_warming(state: dict[str, Any] | None) -> bool:
    """Whether a warming state says indexes are still warming: then callers read stored
    figures (stale) rather than count, which would wait for the index."""
    return bool(state and state.get("state") == "warming")


def get_warming_state(db: Database) -> dict[str, Any] | None:
    """The last warming state `distleech run` recorded (None if never)."""
    doc = db.get_or_none(WARMING_DOC_ID)
    if doc is None:
        return None
    return {key: doc.get(key) for key in ("state", "warm", "total", "current", "at")}
