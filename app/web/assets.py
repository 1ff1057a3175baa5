"""Vendored front-end files (htmx, uPlot) served from the repo's node_modules.

They come from npm packages pinned in package.json and installed next to the
app (`npm install`), never from a CDN at run time: pages keep working on a
site without Internet access, and the Content-Security-Policy can stay
'self'. Only the files listed in ASSETS are served, by name, so no request
can reach anything else in node_modules.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, send_file, url_for

from app.errors import NotFoundError

log = logging.getLogger(__name__)

# The repo root is the parent of the `app` package (this file is app/web/assets.py).
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
ONE_DAY = 86400
JAVASCRIPT, CSS = "text/javascript", "text/css"

# URL name -> (path under node_modules, mimetype). Bump a pin in package.json and
# browsers may keep the old file for up to a day (Cache-Control below).
ASSETS: dict[str, tuple[str, str]] = {
    "htmx.min.js": ("htmx.org/dist/htmx.min.js", JAVASCRIPT),
    "uPlot.iife.min.js": ("uplot/dist/uPlot.iife.min.js", JAVASCRIPT),
    "uPlot.min.css": ("uplot/dist/uPlot.min.css", CSS),
}

bp = Blueprint("assets", __name__)


@bp.get("/assets/<name>")
def asset(name: str) -> Response:
    """One vendored file, cacheable for a day; 404 for any name not in ASSETS.

    A listed file missing from node_modules (npm install not run) is a 404
    and a warning in the log, not a 500: the pages still read without it.
    """
    if name not in ASSETS:
        raise NotFoundError(f"No asset {name!r}.")
    relative, mimetype = ASSETS[name]
    path = NODE_MODULES / relative
    if not path.is_file():
        log.warning(
            "asset %s missing: %s not found; run `npm install` in %s",
            name,
            path,
            NODE_MODULES.parent,
        )
        raise NotFoundError(f"The asset {name!r} is not installed on this server.")
    return send_file(path, mimetype=mimetype, max_age=ONE_DAY, conditional=True)


def asset_url(name: str) -> str:
    """The URL of a vendored file, for templates (`{{ asset_url("htmx.min.js") }}`).

    An unknown name is a KeyError at render time: a typo shows in tests, not
    as a silently missing script.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; add it to app/web/assets.py ASSETS")
    return url_for("assets.asset", name=name)
