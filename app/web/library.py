"""Torrents at `/library`: browse and search, a torrent's page, upload."""

from __future__ import annotations

from app.web.pages import page_blueprint

bp = page_blueprint("library", __name__)
