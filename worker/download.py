"""The download worker: fetch leased torrents of one site and hand them to a BitTorrent client.

Per leased task: fetch the .torrent from the site (classic or ajax download
URL, see gazelle.py), check that it parses, upload it to the registry
(multipart POST /api/torrents, so the ingest scan can match and verify the
files later), then add it to the client. Nothing is submitted when the
client has it: the download finishes whenever it finishes, and the ingest
scan marks the task filled. A task that fails keeps its lease, so it comes
back to some worker when the lease expires; a torrent the site no longer has
(its JSON API confirms it) is reported unavailable, which cancels its task.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any

from worker.btclients import AddResult, BitTorrentClient, BitTorrentClientError
from worker.coordinator import Coordinator, CoordinatorError
from worker.gazelle import (
    GazelleAuthError,
    GazelleClient,
    GazelleError,
    GazelleFailureError,
)

log = logging.getLogger(__name__)


class InvalidTorrentError(Exception):
    """The site's answer is not a usable .torrent."""


class TorrentGoneError(Exception):
    """The site no longer has the torrent (trumped or deleted); its task was cancelled."""


def torrent_info_hash(data: bytes) -> str:
    """The info hash (lower-case hex) of .torrent bytes; raise InvalidTorrentError if unusable."""
    import torf

    try:
        torrent = torf.Torrent.read_stream(io.BytesIO(data))
    except torf.TorfError as exc:
        raise InvalidTorrentError(str(exc)) from None
    return str(torrent.infohash).lower()


@dataclasses.dataclass
class DownloadReport:
    """What one lease did with its tasks."""

    leased: int = 0
    added: int = 0
    already_in_client: int = 0
    unavailable: int = 0
    failed: int = 0
    info_hashes: list[str] = dataclasses.field(default_factory=list)


class DownloadWorker:
    """Lease download tasks of one site and add their torrents to one client."""

    def __init__(
        self,
        coordinator: Coordinator,
        gazelle: GazelleClient,
        client: BitTorrentClient,
        *,
        site: str,
        batch_size: int = 5,
        download_dir: str | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.gazelle = gazelle
        self.client = client
        self.site = site
        self.batch_size = batch_size
        self.download_dir = download_dir

    def run_batch(self) -> DownloadReport:
        """Lease one batch and process it; an empty lease means no work.

        Site credential errors and an unreachable client stop the worker:
        every further task would fail the same way.
        """
        report = DownloadReport()
        tasks = self.coordinator.lease_downloads(self.site, self.batch_size)
        report.leased = len(tasks)
        for task in tasks:
            try:
                added = self.process(task)
            except (GazelleAuthError, BitTorrentClientError):
                raise
            except TorrentGoneError as exc:
                log.warning("task %s (torrent %s): %s", task["id"], task["siteTorrentId"], exc)
                report.unavailable += 1
                continue
            except (GazelleError, InvalidTorrentError, CoordinatorError) as exc:
                log.error("task %s (torrent %s): %s", task["id"], task["siteTorrentId"], exc)
                report.failed += 1
                continue
            report.info_hashes.append(added.info_hash)
            if added.added:
                report.added += 1
            else:
                report.already_in_client += 1
        return report

    def process(self, task: dict[str, Any]) -> AddResult:
        """Fetch, register and add one task's torrent; return the client's AddResult."""
        torrent_id = int(task["siteTorrentId"])
        try:
            data = self.gazelle.download_torrent(torrent_id)
        except GazelleFailureError as exc:
            self._check_still_listed(torrent_id, exc)
            raise
        info_hash = torrent_info_hash(data)
        # Registered before the client gets it: a download nobody can match is wasted.
        self.coordinator.upload_torrent_file(self.site, torrent_id, data)
        result = self.client.add_torrent(data, info_hash, download_dir=self.download_dir)
        log.info(
            "torrent %s (%s): %s %s",
            torrent_id,
            info_hash,
            "added to" if result.added else "already in",
            self.client.name,
        )
        return result

    def _check_still_listed(self, torrent_id: int, failure: GazelleFailureError) -> None:
        """After a failed download, ask the JSON API whether the torrent still exists.

        Only a second, explicit "no such torrent" from action=torrent cancels
        the task: a download URL that fails for another reason (a wrong site
        URL, an outage) must not cancel a whole queue.
        """
        try:
            self.gazelle.torrent(torrent_id)
        except GazelleFailureError as exc:
            reason = f"gone from the site: {failure.error}; action=torrent: {exc.error}"
            self.coordinator.mark_unavailable(self.site, torrent_id, reason)
            raise TorrentGoneError(reason) from None
