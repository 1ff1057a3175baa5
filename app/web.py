"""Request parsing shared by the blueprints: JSON bodies, form fields, row counts."""

from __future__ import annotations

import json
from typing import Any

from flask import Request, current_app

from app.errors import InvalidJsonError, InvalidRowsError, UnsupportedMediaTypeError


def context() -> Any:
    """The per-process Context (settings, db, leaser, auth, clock)."""
    return current_app.extensions["distleech"]


def json_body(req: Request) -> Any:
    """Parse the body as JSON whatever the content type curl sent; errors get codes."""
    if req.mimetype and req.mimetype not in ("application/json", "application/x-www-form-urlencoded",
                                              "text/plain") and not req.mimetype.endswith("+json"):
        raise UnsupportedMediaTypeError(f"Expected a JSON body, got {req.mimetype}.")
    raw = req.get_data(cache=True)
    if not raw.strip():
        raise InvalidJsonError("The request body is empty; a JSON document is expected.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJsonError(f"The request body is not valid JSON: {exc}") from None


def parse_rows(raw: Any, maximum: int) -> int:
    """A row count: a whole number from 1; more than `maximum` is capped, not refused."""
    text = str(raw).strip() if raw is not None else ""
    if not text.isdigit() or int(text) < 1:
        raise InvalidRowsError(f"rows must be a whole number from 1 to {maximum}, got {raw!r}.")
    return min(int(text), maximum)
