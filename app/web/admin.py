"""Admin pages at `/admin`: people, invites, tokens, whitelist, tracked torrents."""

from __future__ import annotations

from app.web.pages import page_blueprint

bp = page_blueprint("admin_pages", __name__)
