"""HTTP blueprints: parse, call an operation, return JSON."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from app.api import admin, archive, cache, ingest, metadata, stats, torrents, tracker

    for module in (metadata, archive, stats, admin, torrents, ingest, cache, tracker):
        app.register_blueprint(module.bp)
