"""A small shared cache of what workers fetched from sites (artist pages, for 7 days).

The original client cached Gazelle artist responses in CouchDB for a week,
because a site allows 5 API requests per 10 seconds and an inventory holds
many albums per artist. Workers talk only to the coordinator, so the cache
is reached through it:

- `GET /api/cache/<kind>?site=…&key=…` -> {"site", "kind", "key", "value",
  "fetchedAt", "expiresAt"}, or 404 `cache_miss` (never stored, or expired);
- `PUT /api/cache/<kind>` JSON {"site", "key", "value", "ttlSeconds"?}
  (default 7 days, at most 30) -> {"ok": true, "id", "expiresAt"}.

A cache document is `cache:<site host>:<kind>:<normalised key>` with type
"cache". It is not event-sourced: it is a disposable copy of another
system's data, overwritten in place, and losing one costs one request to
the site. A concurrent write of the same entry is a conflict that is simply
dropped (both writers fetched the same page). Expired documents stay until
overwritten.

The operations live here rather than in app/cache.py only because this file
is the one this change owns; they call nothing over HTTP.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.accounts.auth import WORKER, requires
from app.api.web import context, json_body
from app.errors import CacheMissError, ValidationFailedError
from app.ids import normalize_key
from app.queues.downloads import site_host
from app.store.couch import Database, DocumentConflictError
from app.timeutil import iso, parse_iso

bp = Blueprint("cache", __name__)

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_KEY_CHARS = 500
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def cache_doc_id(host: str, kind: str, key: str) -> str:
    return f"cache:{host}:{kind}:{normalize_key(key)}"


def get_cached(db: Database, host: str, kind: str, key: str, now: datetime) -> dict[str, Any]:
    """The stored entry while it is fresh; raise CacheMissError otherwise."""
    doc = db.get_or_none(cache_doc_id(host, kind, key))
    if doc is None or parse_iso(doc["expires_at"]) <= now:
        raise CacheMissError(f"No fresh {kind} entry for {key!r} of {host}.")
    return {
        "site": doc["site"],
        "kind": doc["kind"],
        "key": doc["key"],
        "value": doc["value"],
        "fetchedAt": doc["fetched_at"],
        "expiresAt": doc["expires_at"],
    }


def put_cached(
    db: Database, host: str, kind: str, key: str, value: Any, now: datetime, ttl: float
) -> dict[str, Any]:
    """Store (or replace) an entry; a conflicting concurrent write wins, ours is dropped."""
    doc_id = cache_doc_id(host, kind, key)
    doc: dict[str, Any] = {
        "_id": doc_id,
        "type": "cache",
        "site": host,
        "kind": kind,
        "key": normalize_key(key),
        "value": value,
        "fetched_at": iso(now),
        "expires_at": iso(now + timedelta(seconds=ttl)),
    }
    stored = db.get_or_none(doc_id)
    if stored is not None:
        doc["_rev"] = stored["_rev"]
    try:
        db.put(doc)
    except DocumentConflictError:
        pass
    return {"ok": True, "id": doc_id, "expiresAt": doc["expires_at"]}


def _parse_target(kind: str, site: Any, key: Any) -> tuple[str, str]:
    """(host, key) of a request, or ValidationFailedError naming the field."""
    if not _KIND.match(kind):
        raise ValidationFailedError("kind must be 1-32 of a-z, 0-9, _.", field="kind")
    host = site_host(site) if isinstance(site, str) else None
    if host is None:
        raise ValidationFailedError("site must be the site's URL or hostname.", field="site")
    if not isinstance(key, str) or not normalize_key(key) or len(key) > MAX_KEY_CHARS:
        raise ValidationFailedError(
            f"key must be a non-blank string of at most {MAX_KEY_CHARS} characters.", field="key"
        )
    return host, key


@bp.get("/api/cache/<kind>")
@requires(WORKER)
def read_cache(kind: str) -> Response:
    """A fresh cache entry, or 404 cache_miss."""
    ctx = context()
    host, key = _parse_target(kind, request.args.get("site"), request.args.get("key"))
    return jsonify(get_cached(ctx.db, host, kind, key, ctx.clock()))


@bp.put("/api/cache/<kind>")
@requires(WORKER)
def write_cache(kind: str) -> Response:
    """Store what a worker fetched for ttlSeconds (default 7 days, capped at 30)."""
    ctx = context()
    body = json_body(request)
    if not isinstance(body, dict) or "value" not in body:
        raise ValidationFailedError("The body must be an object with site, key and value.")
    host, key = _parse_target(kind, body.get("site"), body.get("key"))
    ttl = body.get("ttlSeconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise ValidationFailedError(
            f"ttlSeconds must be a number of seconds above 0, at most {MAX_TTL_SECONDS}.",
            field="ttlSeconds",
        )
    return jsonify(put_cached(ctx.db, host, kind, key, body["value"], ctx.clock(), float(ttl)))
