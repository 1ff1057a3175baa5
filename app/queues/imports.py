"""An inventory import that runs in the background and reports its progress.

The work is the same as `POST /api/admin/import-csv` and `distleech
import-csv` (read_inventory_csv + import_albums); only where it runs
differs: a thread of the web process, so a big file does not hold a request
open for minutes. Its progress lives in `_local/import:<id>` of the read
model: a _local document never replicates and is no event, and any web
process (not only the one running the import) can show it.

While the import runs, a reporter writes the progress every
HEARTBEAT_SECONDS with a `heartbeat_at`; should the process die, the
heartbeat goes stale and the import reads as "stopped". Running the same
file again is harmless: an import only adds albums that are not stored yet.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import IO, Any

from app.errors import ApiError, InvalidCsvError
from app.queues.albums import ImportSummary, import_albums, open_csv_text, read_inventory_csv
from app.store.couch import Database
from app.timeutil import iso

log = logging.getLogger(__name__)

PREFIX = "_local/import:"
HEARTBEAT_SECONDS = 1.0
STALE_AFTER = timedelta(seconds=30)  # many heartbeats missed: the process is gone
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
RUNNING, FINISHED, FAILED, STOPPED = "running", "finished", "failed", "stopped"

Rows = Iterator[tuple[int, str, str]]


def progress_doc_id(import_id: str) -> str:
    return f"{PREFIX}{import_id}"


@dataclasses.dataclass
class ImportRun:
    """One background import: what it reads, what it counted so far, and its progress document."""

    db: Database
    clock: Callable[[], datetime]
    import_id: str
    file_name: str
    actor: str
    binary: IO[bytes]
    total_bytes: int
    summary: ImportSummary = dataclasses.field(default_factory=ImportSummary)
    rows_read: int = 0
    state: str = RUNNING
    error: str | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    doc: dict[str, Any] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def save(self) -> None:
        """Write the progress now (the import thread and the reporter both do: one at a time)."""
        with self.lock:
            bytes_read = self.total_bytes if self.state != RUNNING else self._position()
            summary = self.summary.as_dict()
            self.doc.update(
                state=self.state,
                error=self.error,
                heartbeat_at=iso(self.clock()),
                rows_read=self.rows_read + self.summary.rejected,
                bytes_read=min(bytes_read, self.total_bytes),
                summary=summary,
            )
            self.db.put(self.doc)

    def _position(self) -> int:
        try:
            return self.binary.tell()
        except (OSError, ValueError):  # closed at the end: the whole file was read
            return self.total_bytes

    def counted(self, rows: Rows) -> Rows:
        """The rows, counted as the import reads them."""
        for row in rows:
            self.rows_read += 1
            yield row


def start_import(
    db: Database,
    binary: IO[bytes],
    *,
    file_name: str,
    total_bytes: int,
    actor: str,
    clock: Callable[[], datetime],
) -> str:
    """Check the CSV's header, then import it in a background thread; return the import's id.

    `binary` is a seekable file the import owns and closes (the caller's
    upload, copied). A file without the required columns, or not UTF-8 in its
    first rows, raises InvalidCsvError here, before anything is written.
    """
    run = ImportRun(db, clock, secrets.token_hex(8), file_name, actor, binary, total_bytes)
    text = open_csv_text(binary)
    try:
        rows = read_inventory_csv(text, run.summary)
        first = list(itertools.islice(rows, 1))  # reads the header: refuses a wrong file now
    except UnicodeDecodeError as exc:
        text.close()
        raise InvalidCsvError(f"The file is not UTF-8 text ({exc.reason}).") from None
    except ApiError:
        text.close()
        raise
    run.doc.update(
        _id=progress_doc_id(run.import_id),
        id=run.import_id,
        file=file_name,
        actor=actor,
        started_at=iso(clock()),
        total_bytes=total_bytes,
    )
    run.save()
    all_rows = itertools.chain(first, rows)
    threading.Thread(
        target=_run, args=(run, text, all_rows), name=f"import-{run.import_id}", daemon=True
    ).start()
    threading.Thread(
        target=_report, args=(run,), name=f"import-report-{run.import_id}", daemon=True
    ).start()
    return run.import_id


def _run(run: ImportRun, text: IO[str], rows: Rows) -> None:
    """Import every row, then record how it ended (the same summary the API answers)."""
    try:
        import_albums(
            run.db, run.counted(rows), actor=run.actor, now=run.clock(), summary=run.summary
        )
        run.state = FINISHED
    except UnicodeDecodeError as exc:
        run.summary.reject(0, f"the file is not UTF-8 ({exc.reason}); rows before it were imported")
        run.state = FINISHED  # as the API reports it: a summary with the rejection
    except Exception as exc:  # the page must say that it failed, in words
        log.exception("import %s failed", run.import_id)
        run.state, run.error = FAILED, _failure_words(exc)
    finally:
        run.done.set()
        text.close()
        _save_final(run)


def _failure_words(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return exc.reason
    return (
        "The import stopped on an error (the server's log has the details). Albums imported"
        " before it are kept; import the same file again to add the rest."
    )


def _save_final(run: ImportRun) -> None:
    for _ in range(3):  # the database may be briefly away: the final state matters most
        try:
            run.save()
            return
        except Exception:
            log.warning("could not record the end of import %s", run.import_id, exc_info=True)
            run.done.wait(1.0)


def _report(run: ImportRun) -> None:
    """Write the progress every HEARTBEAT_SECONDS until the import ends."""
    while not run.done.wait(HEARTBEAT_SECONDS):
        try:
            run.save()
        except Exception:  # a missed heartbeat is not the import's failure
            log.warning("could not record the progress of import %s", run.import_id, exc_info=True)


def get_import(db: Database, import_id: str, now: datetime) -> dict[str, Any] | None:
    """The import's progress, or None if there is no such import.

    A running import whose heartbeat is older than STALE_AFTER reads as
    "stopped": the process that ran it is gone.
    """
    if not ID_PATTERN.match(import_id):
        return None
    doc = db.get_or_none(progress_doc_id(import_id))
    if doc is None:
        return None
    shown = {k: v for k, v in doc.items() if not k.startswith("_")}
    if shown["state"] == RUNNING and shown["heartbeat_at"] < iso(now - STALE_AFTER):
        shown["state"] = STOPPED
    total = shown.get("total_bytes") or 0
    shown["percent"] = 100 if total == 0 else int(100 * shown.get("bytes_read", 0) / total)
    return shown
