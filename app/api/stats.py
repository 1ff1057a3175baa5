"""GET /stats: public counts, HTML by default as the original printed them.

Anyone may call it (no credentials). The format follows the Accept header
(best match among HTML, JSON and plain text; HTML when nothing matches, as
for curl's `*/*`), and `?format=html|json|text` overrides it for clients
that cannot set headers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Request, Response, jsonify, request
from markupsafe import escape

from app import stats
from app.errors import ValidationFailedError
from app.web import context

bp = Blueprint("stats", __name__)

FORMATS = {"text/html": "html", "application/json": "json", "text/plain": "text"}


def wanted_format(req: Request) -> str:
    """html, json or text: ?format= first, else the best match for Accept."""
    explicit = req.args.get("format")
    if explicit is not None:
        if explicit not in FORMATS.values():
            raise ValidationFailedError(
                "format must be one of html, json, text.", field="format", value=explicit
            )
        return explicit
    best = req.accept_mimetypes.best_match(list(FORMATS), default="text/html")
    return FORMATS.get(best or "text/html", "html")


def render_html(figures: dict[str, Any]) -> str:
    """A minimal page whose body holds the same lines as `distleech stats`."""
    body = "<br>\n".join(str(escape(line)) for line in stats.stats_lines(figures))
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>distleech stats</title></head>\n"
        f"<body>\n<p>\n{body}\n</p>\n</body>\n</html>\n"
    )


@bp.get("/stats")
def show_stats() -> Response:
    """Albums, metadata dispatches (stale/active), filled requests; per-queue counts in JSON."""
    ctx = context()
    fmt = wanted_format(request)
    figures = stats.get_stats(ctx.db, ctx.clock())
    if fmt == "json":
        response = jsonify(figures)
    elif fmt == "text":
        response = Response(stats.format_stats_text(figures) + "\n", mimetype="text/plain")
    else:
        response = Response(render_html(figures), mimetype="text/html")
    response.vary.add("Accept")  # caches must not hand JSON to a browser or HTML to a script
    return response
