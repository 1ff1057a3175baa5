"""HTTP blueprints: parse, call an operation, return JSON."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from app.api import metadata

    app.register_blueprint(metadata.bp)
