"""The member's profile at `/profile`: totals, passkey, password, invites."""

from __future__ import annotations

from app.web.pages import page_blueprint

bp = page_blueprint("profile", __name__)
