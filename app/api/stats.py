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
from app.api.web import context
from app.errors import ValidationFailedError
from app.sites.status import sites_lines, sites_summary
from app.store.designdocs import get_warming_state, is_warming

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


def _warming_line(indexes: dict[str, Any] | None) -> str:
    """While `distleech run` still builds indexes, a line saying how far it got."""
    if not indexes or indexes.get("state") != "warming":
        return ""
    current = f", now {indexes['current']}" if indexes.get("current") else ""
    return f"Indexes: warming, {indexes['warm']} of {indexes['total']} warm{current}"


def render_html(figures: dict[str, Any], extra: list[str]) -> str:
    """A minimal page whose body holds the same lines as `distleech stats`."""
    lines = [*stats.stats_lines(figures), *extra]
    body = "<br>\n".join(str(escape(line)) for line in lines)
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>distleech stats</title></head>\n"
        f"<body>\n<p>\n{body}\n</p>\n</body>\n</html>\n"
    )


@bp.get("/stats")
def show_stats() -> Response:
    """Albums, metadata dispatches (stale/active), filled requests; per-queue counts in JSON.

    Then this site's name and every configured site's lag ("site", "sites":
    {name: {state, push/pull: {pending, seconds_since_success}}}).

    JSON also says how warm the indexes are ("indexes": {"state": "warming" or
    "warm", "warm", "total", "current", "at"}, null if never warmed by `run`).
    """
    ctx = context()
    fmt = wanted_format(request)
    indexes = get_warming_state(ctx.db)
    figures = stats.get_stats(ctx.db, ctx.clock(), stale=is_warming(indexes))
    sites = sites_summary(ctx.db, ctx.settings, ctx.clock())
    extra = [line for line in [_warming_line(indexes), *sites_lines(sites)] if line]
    if fmt == "json":
        response = jsonify({**figures, "indexes": indexes, **sites})
    elif fmt == "text":
        text = "\n".join([stats.format_stats_text(figures), *extra])
        response = Response(text + "\n", mimetype="text/plain")
    else:
        response = Response(render_html(figures, extra), mimetype="text/html")
    response.vary.add("Accept")  # caches must not hand JSON to a browser or HTML to a script
    return response
