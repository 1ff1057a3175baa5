"""Inventory at `/inventory`: browse and search albums, and read one album's history.

Albums are read from their projections: all of them as one `_all_docs` id
range, or those in one state through the stats/by_type_state view (reduce=false,
keyed [type, state, queue]). No view indexes album text, so a search reads
at most SCAN_LIMIT albums per request and offers to search on from where it
stopped, instead of reading the whole inventory for one page view. An album's
page reads its own events (one key range of the log's by_aggregate view) and
the download tasks of the torrents found for it. Who: any logged-in person.
"""

from __future__ import annotations

from typing import Any

from flask import request

from app.api.web import context
from app.errors import NotFoundError
from app.ids import normalize_key
from app.queues import downloads
from app.queues.albums import FOUND, QUEUE, album_doc_id
from app.queues.holders import LEASED, READY, holders_of
from app.store.couch import Database, prefix_end
from app.store.events import Doc, read_events, site_of
from app.web.pages import login_required, page_blueprint, render_page
from metainfo.names import whole_number

bp = page_blueprint("inventory", __name__)

STATES = {READY: "Waiting for a worker", LEASED: "Leased to a worker", FOUND: "Torrents found"}
PAGE_SIZE = 50
SCAN_LIMIT = 2000  # albums a search reads per request (about a second on the bundled server)
READ_ROWS = 500
PREFIX = "album:"


@bp.get("/inventory")
@login_required
def browse() -> Any:
    """Albums, a page at a time: all, or in one state, or matching words of artist or title."""
    state = request.args.get("state", "")
    words = normalize_key(request.args.get("q", "")).split()
    start_text = request.args.get("start", "0")
    error = None
    if state and state not in STATES:
        error, state = "Choose a state from the list.", ""
    start = whole_number(start_text)
    if start is None:
        error, start = "The page position must be a whole number; showing the first page.", 0
    albums, scanned, more = find_albums(context().db, state, words, start)
    html = render_page(
        "inventory/browse.html",
        title="Inventory",
        error=error,
        state=state,
        states=STATES,
        q=request.args.get("q", ""),
        albums=albums,
        start=start,
        next_start=start + scanned if more else None,
        scanned=scanned,
        searching=bool(words),
    )
    return (html, 400) if error else html


def find_albums(
    db: Database, state: str, words: list[str], start: int
) -> tuple[list[Doc], int, bool]:
    """Albums from position `start`: (the page, how many were read, whether more follow).

    Without words, a page is the next PAGE_SIZE albums. With words, albums are
    read until a page matches or SCAN_LIMIT were read, whichever comes first.
    """
    if not words:
        albums = read_albums(db, state, start, PAGE_SIZE + 1)
        return albums[:PAGE_SIZE], min(len(albums), PAGE_SIZE), len(albums) > PAGE_SIZE
    found: list[Doc] = []
    scanned = 0
    while scanned < SCAN_LIMIT:
        chunk = read_albums(db, state, start + scanned, READ_ROWS)
        for album in chunk:
            scanned += 1
            if all(word in album.get("key", "") for word in words):
                found.append(album)
                if len(found) == PAGE_SIZE:
                    return found, scanned, True
        if len(chunk) < READ_ROWS:
            return found, scanned, False
    return found, scanned, True


def read_albums(db: Database, state: str, skip: int, limit: int) -> list[Doc]:
    """Albums in id order from position `skip`: all of them, or those in `state`.

    Paged by skip: within one state every row has the same view key, and the
    bundled server ignores startkey_docid, so there is no cursor to resume from.
    """
    if state:
        key = ["album", state, QUEUE]
        rows = db.view(
            "stats",
            "by_type_state",
            key=key,
            reduce=False,
            skip=skip,
            limit=limit,
            include_docs=True,
        )
    else:
        rows = db.server.get_json(
            f"{db.path}/_all_docs",
            startkey=PREFIX,
            endkey=prefix_end(PREFIX),
            inclusive_end=False,
            skip=skip,
            limit=limit,
            include_docs=True,
        )["rows"]
    return [row["doc"] for row in rows if row.get("doc") and row["doc"].get("version")]


@bp.get("/inventory/<int:album_id>")
@login_required
def album(album_id: int) -> str:
    """One album: what it is, where it stands, its downloads, and every event in words."""
    db = context().db
    doc = db.get_or_none(album_doc_id(album_id))
    if doc is None or not doc.get("version"):
        raise NotFoundError(f"No album has the id {album_id}.")
    return render_page(
        "inventory/album.html",
        title=f"{doc.get('sortArtist', '')} – {doc.get('album', '')}",
        album=doc,
        state_words=STATES.get(doc.get("state", ""), doc.get("state", "")),
        holders=holders_of(doc.get("lease")),
        downloads=album_downloads(db, doc),
        history=[describe_change(change) for change in read_events(db, doc["_id"])],
        site=site_of(db),
    )


def album_downloads(db: Database, album: Doc) -> list[dict[str, Any]]:
    """The torrents found for the album, each with the state of its download task."""
    refs = []
    for torrent in album.get("torrents") or []:
        host = downloads.site_host(str(torrent.get("site", "")))
        task_id = downloads.task_doc_id(host, torrent["torrentId"]) if host else None
        refs.append((torrent, task_id))
    tasks = db.get_many(task_id for _, task_id in refs if task_id)
    return [
        {
            "site": torrent.get("site"),
            "torrent_id": torrent.get("torrentId"),
            "state": tasks.get(task_id or "", {}).get("state", "not created"),
        }
        for torrent, task_id in refs
    ]


def readable(moment: str | None) -> str:
    """An ISO time as a person reads it: "2026-01-01 12:00 UTC"."""
    return f"{moment[:10]} {moment[11:16]} UTC" if moment else "an unknown time"


def describe_change(change: Doc) -> dict[str, Any]:
    """One event of an album: when, by whom, and what happened, in a sentence."""
    return {
        "at": change["at"],
        "actor": change["actor"],
        "site": change.get("site", ""),
        "name": change["name"],
        "what": change_sentence(change["name"], change.get("data") or {}),
    }


def change_sentence(name: str, data: dict[str, Any]) -> str:
    """What an album event means, in words (the name itself for events this page does not know)."""
    if name == "imported":
        return f"Imported into the inventory as {data.get('sortArtist')} – {data.get('album')}."
    if name == "leased":
        return f"Leased to {data.get('holder')} until {readable(data.get('expires_at'))}."
    if name == "lease_expired":
        holders = data.get("holders") or [data.get("holder")]
        who = ", ".join(str(h) for h in holders if h) or "its holder"
        return f"The lease of {who} ran out; back in the queue."
    if name == "released":  # by hand, by an admin (the event's actor): app/queues/leases.py
        holders = data.get("holders") or [data.get("holder")]
        who = ", ".join(str(h) for h in holders if h) or "its holder"
        reason = f" ({data['reason']})" if data.get("reason") else ""
        return f"The lease of {who} was released by hand{reason}; back in the queue."
    if name == "torrents_found":
        torrents = data.get("torrents") or []
        listed = ", ".join(f"{t.get('site')} #{t.get('torrentId')}" for t in torrents)
        return f"Found {len(torrents)} torrent{'' if len(torrents) == 1 else 's'}: {listed}."
    if name == "not_found":
        return f"No torrent found; to be tried again after {readable(data.get('retry_at'))}."
    return name.replace("_", " ").capitalize() + "."
