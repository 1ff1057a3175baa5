"""Remote sources (galleries, collections) kept in step with local directories by workers
running gallery-dl: the source aggregate, its sync orders (leased work) and its files.

Modules: checks.py (what fields and file names may be), aggregate.py (`source:<id>`),
cookies.py (the secret, in the secrets database), orders.py (`syncorder:<id>`, on the
shared lease life cycle), dispatch.py (handing an order to a worker, renewing its
lease, who may report on it), files.py (`sourcefile:<id>:<sha1>`), jobs.py (scheduled syncs).
Each module's docstring lists its events and their data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.config import Settings
from app.sources import aggregate, files, jobs, orders
from app.store.couch import Database
from app.store.events import Projector

# aggregate type -> projector, merged into app/projectors.py's table
PROJECTORS: dict[str, Projector] = {
    aggregate.TYPE: aggregate.apply_source_event,
    orders.TYPE: orders.apply_order_event,
    files.TYPE: files.apply_file_event,
}


def scheduled_jobs(settings: Settings) -> list[tuple[Callable[[Database, datetime], Any], float]]:
    """The scheduler's jobs of this context, with their intervals in seconds."""
    return [(jobs.queue_due_syncs, settings.sources.schedule_seconds)]
