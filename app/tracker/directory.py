"""Who may announce what: users, torrents and the whitelist, in the tracker's memory.

The management API (web app) records them as events in the main database; the
tracker loads their projections at start and then follows `_changes` (filter
`tracker/directory`), so an announce never reads CouchDB. A registration made
through the API reaches the tracker as soon as the change feed delivers it.
The feed is read in a thread, but the changes are applied on the event loop
(the server passes `apply`): the directory has one writer, the loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from app.store.couch import Database
from app.tracker.activity import DIRECTORY_FILTER, iter_directory_docs

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    can_leech: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Gone:
    """A registration that ended: its peers must go too."""

    user_id: int | None = None
    info_hash: bytes | None = None


@dataclasses.dataclass(slots=True)
class Tracked:
    """A registered torrent; `snatches` counts up in memory between projection updates."""

    torrent_id: int | None
    snatches: int


class Directory:
    """Lookups the hot path makes; replaced entry by entry as projections change."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}  # sha256 hex of passkey -> member
        self._seen: dict[bytes, Member] = {}  # passkey -> member, so announces skip the hash
        self._passkey_of: dict[int, str] = {}  # user_id -> sha256 hex, to drop old passkeys
        self.torrents: dict[bytes, Tracked] = {}  # raw info hash -> registration
        self._whitelist: dict[str, bytes] = {}  # prefix -> prefix bytes
        self.whitelist: tuple[bytes, ...] = ()
        self.seq: Any = 0

    def member(self, passkey: bytes) -> Member | None:
        found = self._seen.get(passkey)
        if found is None:
            found = self.members.get(hashlib.sha256(passkey).hexdigest())
            if found is not None and len(self._seen) < 100_000:
                self._seen[passkey] = found
        return found

    def allows_client(self, peer_id: bytes) -> bool:
        """An empty whitelist allows every client; else the peer id must start with a prefix."""
        return not self.whitelist or peer_id.startswith(self.whitelist)

    def apply(self, doc: Doc) -> Gone | None:
        """Take one projection document (or its deletion) into account.

        Returns what stopped being allowed, so the caller can drop its peers.
        """
        doc_id = doc.get("_id", "")
        if doc_id.startswith("tracked:"):
            return self._apply_torrent(doc)
        if doc_id.startswith("trackeruser:"):
            return self._apply_user(doc)
        if doc_id.startswith("whitelist:"):
            self._apply_whitelist(doc)
        return None

    def _apply_torrent(self, doc: Doc) -> Gone | None:
        try:
            info_hash = bytes.fromhex(doc["_id"].split(":", 1)[1])
        except ValueError:
            return None
        if doc.get("registered") and not doc.get("_deleted"):
            # The projection lags our own in-memory count until the write-behind lands;
            # only this tracker records snatches, so the larger count is the right one.
            known = self.torrents.get(info_hash)
            snatches = max(int(doc.get("snatches", 0)), known.snatches if known else 0)
            self.torrents[info_hash] = Tracked(doc.get("torrent_id"), snatches)
            return None
        return Gone(info_hash=info_hash) if self.torrents.pop(info_hash, None) else None

    def _apply_user(self, doc: Doc) -> Gone | None:
        user_id = int(doc.get("user_id", doc["_id"].split(":", 1)[1]))
        old = self._passkey_of.pop(user_id, None)
        if old is not None:
            self.members.pop(old, None)
        self._seen = {}  # any user change may retire a passkey: forget the shortcuts
        if doc.get("active") and doc.get("passkey_sha256") and not doc.get("_deleted"):
            self.members[doc["passkey_sha256"]] = Member(user_id, bool(doc.get("can_leech")))
            self._passkey_of[user_id] = doc["passkey_sha256"]
            return None
        return Gone(user_id=user_id) if old is not None else None

    def _apply_whitelist(self, doc: Doc) -> None:
        prefix = doc["_id"].split(":", 1)[1]
        if doc.get("active") and not doc.get("_deleted"):
            self._whitelist[prefix] = prefix.encode("latin-1", "replace")
        else:
            self._whitelist.pop(prefix, None)
        self.whitelist = tuple(self._whitelist.values())


def load_directory(db: Database) -> Directory:
    """Read every registration, noting the change sequence to follow from."""
    directory = Directory()
    directory.seq = db.info()["update_seq"]  # before the reads: no change can slip between
    for doc in iter_directory_docs(db):
        directory.apply(doc)
    return directory


def follow_directory(
    db: Database,
    directory: Directory,
    stop: threading.Event,
    *,
    apply: Callable[[list[Doc]], None] | None = None,
    poll_seconds: float = 0.25,
) -> None:
    """Hand registration changes to `apply` until `stop` is set (run in a thread).

    Without `apply` they go straight into the directory. A short normal poll
    rather than a long-poll feed: pouchdb-server ignores the long-poll
    `timeout`, and a quick poll answers within a quarter second on both
    servers while costing one small request. Any error is logged and retried:
    a dead follower would leave the tracker with a stale directory.
    """
    while not stop.is_set():
        try:
            feed = db.changes(
                since=directory.seq, filter=DIRECTORY_FILTER, include_docs="true", limit=1000
            )
            rows = feed.get("results", [])
            docs = [row.get("doc") or {"_id": row["id"], "_deleted": True} for row in rows]
            if docs:
                (apply or _apply_all(directory))(docs)
            directory.seq = feed.get("last_seq", directory.seq)
        except Exception as error:  # logged and retried: the follower must not die
            log.warning("tracker directory: following changes failed: %s", error)
            stop.wait(5)
            continue
        if len(rows) < 1000:
            stop.wait(poll_seconds)


def _apply_all(directory: Directory) -> Callable[[list[Doc]], None]:
    def apply(docs: list[Doc]) -> None:
        for doc in docs:
            directory.apply(doc)

    return apply
