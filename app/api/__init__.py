"""HTTP blueprints: parse, call an operation, return JSON."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from app.api import admin, archive, metadata, stats

    for module in (metadata, archive, stats, admin):
        app.register_blueprint(module.bp)
