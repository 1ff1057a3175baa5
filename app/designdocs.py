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

import json
import logging
from pathlib import Path
from typing import Any

from app.couch import Database, DocumentConflictError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DESIGNDOCS_DIR = ROOT / "designdocs"
VIEWS_DIR = ROOT / "views"


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


def warm_views(db: Database, docs: dict[str, dict[str, Any]] | None = None) -> None:
    """Query every view once so its index is built before users ask.

    Apache CouchDB builds all views of a design document together, but
    pouchdb-server keeps one index per view: each must be queried.
    """
    for doc_id, doc in (docs if docs is not None else build_design_docs()).items():
        for name, view in sorted((doc.get("views") or {}).items()):
            params: dict[str, Any] = {"limit": 0}
            if "reduce" in view:
                params["reduce"] = False
            db.view(doc_id.removeprefix("_design/"), name, **params)
