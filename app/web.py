"""Request parsing shared by the blueprints: JSON bodies, form fields, row counts."""

from __future__ import annotations

import json
from typing import Any

from flask import Request, current_app

from app.errors import InvalidJsonError, InvalidRowsError, UnsupportedMediaTypeError
from app.ids import MAX_SAFE_INT


def context() -> Any:
    """The per-process Context (settings, db, leaser, auth, clock)."""
    return current_app.extensions["distleech"]


# curl -d sends form-urlencoded unless told otherwise, so JSON is read from that too.
JSON_BODY_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")


def whole_number(text: str) -> int | None:
    """The value of a string of ASCII digits that fits a JavaScript-safe integer, else None.

    str.isdigit alone lets "²" through (int() then raises), and int() refuses
    strings of more than 4,300 digits: both would end as a 500.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"  # int() counts leading zeros toward its limit
    if len(digits) > 16:
        return None
    value = int(digits)
    return value if value <= MAX_SAFE_INT else None


def json_body(req: Request) -> Any:
    """Parse the body as JSON whatever the content type curl sent; errors get codes."""
    mimetype = req.mimetype
    if mimetype and mimetype not in JSON_BODY_TYPES and not mimetype.endswith("+json"):
        raise UnsupportedMediaTypeError(f"Expected a JSON body, got {mimetype}.")
    raw = req.get_data(cache=True)
    if not raw.strip():
        raise InvalidJsonError("The request body is empty; a JSON document is expected.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJsonError(f"The request body is not valid JSON: {exc}") from None


def parse_rows(raw: Any, maximum: int) -> int:
    """A row count: a whole number from 1; more than `maximum` is capped, not refused."""
    value = whole_number(str(raw).strip() if raw is not None else "")
    if value is None or value < 1:
        raise InvalidRowsError(f"rows must be a whole number from 1 to {maximum}, got {raw!r}.")
    return min(value, maximum)
