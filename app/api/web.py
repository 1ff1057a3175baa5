"""Request parsing shared by the blueprints: JSON bodies, form fields, row counts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from flask import Request, current_app, request

from app.errors import (
    InvalidJsonError,
    InvalidRowsError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from metainfo.names import whole_number  # the API's digit rule is the parser's


def context() -> Any:
    """The per-process Context (settings, db, leaser, auth, clock)."""
    return current_app.extensions["distleech"]


# Only a JSON media type counts as JSON. A browser may send text/plain, a form
# or no content type at all to another site without asking first (a "simple"
# request, no CORS preflight) and attaches the basic-auth credentials it holds;
# application/json it can only send after the target agrees. Accepting JSON
# under any other type would let a web page post to admin routes as the admin
# (CSRF). The original clients send application/json: the distleech worker
# posts with requests' json=, and the original server read /metadata/submit
# with Flask's get_json(), which ignored any other type.
JSON_MIMETYPE = "application/json"
# Deeper than any payload of ours (a Gazelle response nests about 5 levels);
# a deeper one would end in a RecursionError somewhere past the parser.
MAX_JSON_DEPTH = 64
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def is_json_mimetype(mimetype: str) -> bool:
    """application/json or any structured-syntax +json type (RFC 6839)."""
    if mimetype == JSON_MIMETYPE:
        return True
    return mimetype.startswith("application/") and mimetype.endswith("+json")


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value, without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse_json_text(raw: bytes | str, what: str = "The request body") -> Any:
    """Parse JSON text; anything unparsable or too deeply nested is InvalidJsonError.

    Every JSON a client sends goes through here: json.loads raises
    RecursionError (not ValueError) on `[` x 100,000, which would be a 500.
    """
    too_deep = f"{what} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels."
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJsonError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJsonError(too_deep) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidJsonError(too_deep)
    return value


def check_json_content_type(req: Request) -> None:
    """Raise 415 unsupported_media_type unless the request says its body is JSON."""
    if not is_json_mimetype(req.mimetype):
        sent = req.mimetype or "no Content-Type"
        raise UnsupportedMediaTypeError(
            f"Expected a JSON body with Content-Type: application/json, got {sent}."
            " (curl: add -H 'Content-Type: application/json', or use --json.)"
        )


def json_body(req: Request) -> Any:
    """The body as JSON: only under a JSON content type (see above); errors get codes.

    An empty body is 400 invalid_json whatever its type: there is nothing to
    misread, and "send a JSON document" is the more useful answer.
    """
    raw = req.get_data(cache=True)
    if not raw.strip():
        raise InvalidJsonError("The request body is empty; a JSON document is expected.")
    check_json_content_type(req)
    return parse_json_text(raw)


def form_or_json_fields(req: Request) -> dict[str, Any]:
    """The fields of a form, or of a JSON object under a JSON content type.

    A form, or no body at all, is read as a form; anything else is 415
    unsupported_media_type, as is JSON sent as a form (`curl -d '{…}'`),
    whose fields would otherwise be silently lost.
    """
    if is_json_mimetype(req.mimetype):
        body = json_body(req)
        if not isinstance(body, dict):
            raise ValidationFailedError("The JSON body must be an object.")
        return body
    raw = req.get_data(cache=True).strip()
    if not raw or (req.mimetype in FORM_MIMETYPES and raw[:1] != b"{"):
        return req.form.to_dict()
    sent = req.mimetype or "a body without Content-Type"
    hint = " (curl: -H 'Content-Type: application/json')" if raw[:1] == b"{" else ""
    raise UnsupportedMediaTypeError(
        f"Send the fields as a form or as JSON under Content-Type: application/json,"
        f" not {sent}{hint}."
    )


def parse_rows(raw: Any, maximum: int) -> int:
    """A row count: a whole number from 1; more than `maximum` is capped, not refused."""
    value = whole_number(str(raw).strip() if raw is not None else "")
    if value is None or value < 1:
        raise InvalidRowsError(f"rows must be a whole number from 1 to {maximum}, got {raw!r}.")
    return min(value, maximum)


def object_schema(
    properties: dict[str, Any], required: list[str], *, may_be_empty: bool = False
) -> Any:
    """A validator for a JSON object body with exactly these fields (some required)."""
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "minProperties": 0 if may_be_empty else 1,
    }
    return jsonschema.Draft202012Validator(schema)


def checked_body(validator: Any) -> dict[str, Any]:
    """The JSON body, checked against a schema; raise validation_failed saying where."""
    body = json_body(request)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        raise ValidationFailedError(f"The body is not valid at {where}: {error.message}")
    assert isinstance(body, dict)
    return body
