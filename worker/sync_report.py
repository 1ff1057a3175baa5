"""Reporting one sync order to the coordinator: file batches, the order's end, its lease.

Split from worker/sync.py (which runs gallery-dl and mirrors deletions) so
that what reaches the coordinator, and when, reads in one place.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from worker.coordinator import Coordinator, CoordinatorError
from worker.gallery import FileResult

log = logging.getLogger(__name__)

BATCH = 1000  # the coordinator's limit of files per request


@dataclasses.dataclass
class SyncReport:
    """One order's outcome; integer fields are summed by `distleech worker`'s summary."""

    leased: int = 0
    synchronised: int = 0
    failed: int = 0
    downloaded: int = 0
    skipped: int = 0
    missing_remotely: int = 0
    deleted: int = 0
    refused: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "missing_remotely": self.missing_remotely,
            "deleted": self.deleted,
        }


class Reporter:
    """Sends file results in batches of at most 1000, counts them, and keeps the lease.

    A batch leaves `pending` only once the coordinator took it (invariant 3):
    after a transient failure (unreachable, 5xx) it is sent again at the next
    flush, and if the last flush still cannot send it the order ends
    `failed`, never `synchronised` with counts the coordinator did not get.
    A refusal (4xx) is not cured by sending again: that batch is dropped and
    the order ends `failed` with the coordinator's reason, so that
    `sources.max_attempts` applies and the worker goes on with the next order.
    """

    def __init__(self, coordinator: Coordinator, order: dict[str, Any], report: SyncReport):
        self.coordinator, self.order, self.report = coordinator, order, report
        self.pending: list[FileResult] = []
        self.refusals: list[str] = []
        self.path = f"api/sources/{quote(str(order['source_id']), safe='')}"
        self.renewing = True
        # the renewal thread (`renewing`) shares the coordinator's HTTP session
        self.lock = threading.Lock()

    def call(self, name: str, body: dict[str, Any]) -> Any:
        """POST api/sources/<id>/<name>, one request at a time."""
        with self.lock:
            return self.coordinator.request("POST", f"{self.path}/{name}", json=body)

    def add(self, result: FileResult) -> None:
        setattr(self.report, result.status, getattr(self.report, result.status) + 1)
        self.pending.append(result)
        if len(self.pending) >= BATCH:
            try:
                self.flush()
            except CoordinatorError as exc:
                # called from inside gallery-dl, which would swallow it; finish() tries again
                log.warning("could not report files yet: %s", exc)

    def flush(self) -> None:
        """Send what is pending; raise CoordinatorError (kept pending) if it is transient."""
        sent = False
        while self.pending:
            batch = self.pending[:BATCH]
            body = {"order": self.order["order"], "files": [r.as_json() for r in batch]}
            try:
                self.call("files", body)
                sent = True
            except CoordinatorError as exc:
                if exc.transient:
                    raise
                log.error("source %s: files refused: %s", self.order["source_id"], exc)
                self.refusals.append(f"{exc.error}: {exc.reason}"[:300])
            del self.pending[: len(batch)]
        if sent:
            self.renew()

    def renew(self) -> None:
        """Extend the order's lease (POST …/renew); a failure is logged, the sync goes on."""
        if not self.renewing:
            return
        try:
            self.call("renew", {"order": self.order["order"]})
        except CoordinatorError as exc:
            if exc.status in (404, 405) and exc.error in ("not_found", "method_not_allowed"):
                self.renewing = False  # a coordinator from before renewals
            log.warning("could not renew the lease of %s: %s", self.order["order"], exc)

    def finish(self, status: str, reason: str | None = None) -> None:
        """Flush, then close the order as synchronised or failed (refusals make it failed)."""
        status, reason = self._final_flush(status, reason)
        try:
            self._end(status, reason)
        except CoordinatorError as exc:
            if exc.transient:
                raise
            log.error("source %s: result refused: %s", self.order["source_id"], exc)
            if status == "synchronised":
                self._end_refused(f"the coordinator refused the result: {exc.error}: {exc.reason}")
            status = "failed"
        if status == "synchronised":
            self.report.synchronised += 1
        else:
            self.report.failed += 1

    def _final_flush(self, status: str, reason: str | None) -> tuple[str, str | None]:
        """Send what is pending; the order's end as it must be reported afterwards."""
        try:
            self.flush()
        except CoordinatorError as exc:
            unsent = f"could not report {len(self.pending)} file(s): {exc}"
            return "failed", "; ".join(filter(None, [unsent, reason]))
        if self.refusals:
            refused = f"the coordinator refused file reports: {'; '.join(self.refusals[:3])}"
            return "failed", "; ".join(filter(None, [refused, reason]))
        return status, reason

    def _end(self, status: str, reason: str | None) -> None:
        body: dict[str, Any] = {
            "order": self.order["order"],
            "status": status,
            "counts": self.report.counts(),
        }
        if reason:
            body["reason"] = reason[:1000]
        self.call("synchronised", body)

    def _end_refused(self, reason: str) -> None:
        """Report `failed` after a refused `synchronised`; a refusal of that is only logged."""
        try:
            self._end("failed", reason)
        except CoordinatorError as exc:
            if exc.transient:
                raise
            log.error("source %s: failure refused too: %s", self.order["source_id"], exc)


@contextmanager
def renewing(reporter: Reporter, lease_seconds: Any) -> Iterator[None]:
    """Renew the lease every third of its length while the body runs.

    gallery-dl may sit in one long download for longer than a lease, when
    no flush renews it; a lease without a known length is not renewed here.
    """
    if not isinstance(lease_seconds, int | float) or lease_seconds <= 0:
        yield
        return
    stop = threading.Event()

    def renew_until_stopped() -> None:
        while not stop.wait(lease_seconds / 3):
            reporter.renew()

    thread = threading.Thread(target=renew_until_stopped, name="lease-renewal", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
