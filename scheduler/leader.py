"""The leader lease: one scheduler per site runs the jobs, any other copy waits.

The lease is one document, `lease:scheduler` (type "lease"), holding the
holder's id (hostname:pid:uuid) and `expires_at`. It is ephemeral
coordination state, not an aggregate: it has no events and no `version`, so
rebuilds, stats and queue views never see it, and losing it costs at most
one lease period of waiting.

- Taking or renewing the lease is a write with the `_rev` just read, so
  CouchDB lets exactly one of two racing copies win (the other gets a 409).
  This is why it is a regular document and not a `_local` one: CouchDB does
  not check `_rev` on `_local` documents, so two copies could both "win".
- The holder renews every `leader_lease_seconds / 3`; a waiting copy polls at
  the same pace and takes over once `expires_at` has passed.
- On a CouchDB cluster a partition can let two writes of one revision both
  succeed on different copies; CouchDB keeps both and picks the same winning
  revision everywhere. Every renewal re-reads the document, and a holder that
  is not named by the winner steps down, so two leaders overlap for at most
  one renewal interval. The jobs are idempotent: an overlap repeats work and
  never corrupts data.
- `expires_at` is written with the holder's clock and compared with the
  reader's: keep hosts on NTP (skew far below a lease period).
- The document lives in the read model, which never replicates: each site
  runs its own scheduler under its own lease (tests/test_sites_scheduler.py).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from app.store.couch import Database, DocumentConflictError
from app.store.events import Doc
from app.timeutil import iso

log = logging.getLogger(__name__)

LEADER_DOC_ID = "lease:scheduler"


def make_holder_id() -> str:
    """hostname:pid:uuid, unique per process even when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Leader:
    """This process's claim on the scheduler lease document."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float,
        holder: str | None = None,
        doc_id: str = LEADER_DOC_ID,
    ) -> None:
        self.db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.holder = holder or make_holder_id()
        self.doc_id = doc_id
        self._held_until: datetime | None = None

    @property
    def renew_seconds(self) -> float:
        """How often to renew (or, while waiting, to poll): a third of the lease."""
        return self.lease.total_seconds() / 3

    def holds(self, now: datetime) -> bool:
        """True while our last successful acquire or renewal has not expired."""
        held_until = self._held_until
        return held_until is not None and now < held_until

    def acquire(self, now: datetime) -> bool:
        """Take the lease, or renew it if ours; False while another holder's lease runs."""
        doc = self.db.get_or_none(self.doc_id)
        if doc is not None and not self._may_take(doc, now):
            self._step_down(doc.get("holder"))
            return False
        try:
            self.db.put(self._lease_doc(doc, now))
        except DocumentConflictError:
            self._step_down("another copy that wrote first")
            return False
        if self._held_until is None:
            log.info("scheduler lease %s acquired by %s", self.doc_id, self.holder)
        self._held_until = now + self.lease
        return True

    def _may_take(self, doc: Doc, now: datetime) -> bool:
        holder = doc.get("holder")
        return holder in (None, self.holder) or str(doc.get("expires_at", "")) <= iso(now)

    def _lease_doc(self, current: Doc | None, now: datetime) -> Doc:
        ours = current is not None and current.get("holder") == self.holder
        doc: Doc = {
            "_id": self.doc_id,
            "type": "lease",
            "holder": self.holder,
            "acquired_at": (current or {}).get("acquired_at") if ours else iso(now),
            "renewed_at": iso(now),
            "expires_at": iso(now + self.lease),
        }
        if current is not None:
            doc["_rev"] = current["_rev"]
        return doc

    def _step_down(self, other: object) -> None:
        if self._held_until is not None:
            log.warning("scheduler lease %s lost to %s", self.doc_id, other)
        self._held_until = None

    def release(self, now: datetime) -> bool:
        """Give the lease up so that a waiting copy takes over at once; True if released.

        Only a lease that names us is released; a 409 means someone else
        moved it already, which is just as good.
        """
        self._held_until = None
        doc = self.db.get_or_none(self.doc_id)
        if doc is None or doc.get("holder") != self.holder:
            return False
        doc.update(holder=None, expires_at=iso(now), released_at=iso(now))
        try:
            self.db.put(doc)
        except DocumentConflictError:
            return False
        log.info("scheduler lease %s released by %s", self.doc_id, self.holder)
        return True
