"""Admin pages for the work queues: leases, CSV import, the archive queue."""

from __future__ import annotations

from app.web.pages import page_blueprint

bp = page_blueprint("queue_pages", __name__)
