"""What a source's fields and a worker's file names may be; each check raises a coded ApiError.

Paths are the dangerous part. A content path and every file name end up
joined under a worker's content root (the original's `CONTENT_ROOT`) and
written or deleted there, so anything that could leave that root is refused
rather than cleaned up: an absolute path, an empty, `.` or `..` segment, a
backslash (a separator on Windows), NUL and other control characters, and
text that is not valid Unicode (a lone surrogate, which no document can
hold). Only what is unsafe where the worker runs is refused: `x:y.jpg` is a
legal POSIX name (not a drive letter there), and gallery-dl writes it so.
The rule itself is metainfo/paths.py, which the worker checks its leases
with too. Refusing keeps one spelling per file, so a record and the file it
names always agree.
"""

from __future__ import annotations

import re
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from app.errors import (
    ApiError,
    InvalidContentPathError,
    InvalidCookiesError,
    InvalidFilenameError,
    InvalidReasonError,
    InvalidScheduleError,
    InvalidSourceIdError,
    InvalidUrlError,
    ValidationFailedError,
)
from app.queues.archive import check_url
from metainfo.paths import is_bad_character, relative_path_problem

SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# gallery-dl picks an extractor by a prefix before the URL: "dirlist:" (the worker's,
# worker/extractors.py), gallery-dl's own "generic:", "ytdl:" and the like
EXTRACTOR_PREFIX = re.compile(r"^([a-z][a-z0-9]{0,31}):(?=(?i:https?)://)")
RESERVED_IDS = frozenset({"next"})  # GET /api/sources/next is the workers' lease
MAX_CONTENT_PATH_CHARS = 1024
MAX_FILENAME_CHARS = 4096
MAX_COOKIES_CHARS = 256 * 1024
MIN_INTERVAL_SECONDS = 60  # the scheduler looks every sources.schedule_seconds anyway
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
COOKIE_FIELDS = 7  # Netscape cookies.txt: domain, subdomains, path, secure, expiry, name, value


def check_source_id(raw: Any) -> str:
    """A source id: a slug of a-z, 0-9 and '-', 1-64 characters, not starting with '-'.

    It is part of document ids, URLs and order ids ("<id>.<round>"), so it
    holds no ':', '/' or '.'; "next" is the workers' route, never a source.
    """
    if not isinstance(raw, str) or not SOURCE_ID.match(raw) or raw in RESERVED_IDS:
        raise InvalidSourceIdError(
            f"A source id is 1-64 characters of a-z, 0-9 and '-' (not first), not 'next';"
            f" got {raw!r}.",
            id=raw if isinstance(raw, str) else None,
        )
    return raw


def check_source_url(raw: Any) -> str:
    """An http(s) URL as check_url normalises it, optionally behind a gallery-dl prefix.

    `dirlist:https://example.org/pub/` names the worker's directory-listing
    extractor; the URL behind the prefix is checked as any other.
    """
    if isinstance(raw, str) and not is_encodable(raw):
        raise InvalidUrlError("url must be valid Unicode text (it holds a lone surrogate).")
    prefix = EXTRACTOR_PREFIX.match(raw.strip()) if isinstance(raw, str) else None
    if prefix is None:
        return check_url(raw)
    return prefix.group(0) + check_url(raw.strip()[prefix.end() :])


def is_encodable(text: str) -> bool:
    """False for text no document can hold: JSON lets a lone surrogate in, UTF-8 does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_reason_text(reason: str | None) -> str | None:
    """A checked failure reason (app/queues/archive.check_reason) that can be stored."""
    if reason is not None and not is_encodable(reason):
        raise InvalidReasonError("reason must be valid Unicode text (it holds a lone surrogate).")
    return reason


def _bad_character(text: str) -> bool:
    """NUL, other control characters (C0, DEL, C1) or a backslash."""
    return any(is_bad_character(c) for c in text)


def _check_relative(text: str, *, what: str, error: type[ApiError]) -> str:
    """A relative path of plain segments (metainfo/paths.py); raise `error` saying what is wrong."""
    problem = relative_path_problem(text)
    if problem is not None:
        # ascii(): a lone surrogate must not reach the JSON answer either
        raise error(f"{what} {problem}, got {ascii(text[:200])}.")
    return text


def check_content_path(raw: Any) -> str:
    """A directory relative to the content root that cannot leave it; trailing '/' dropped.

    The original's example is "portraits/", so a trailing slash is accepted
    and dropped; everything else that is not a plain relative path is refused.
    """
    if not isinstance(raw, str) or not raw.strip("/"):
        raise InvalidContentPathError("content_path must be a non-empty relative directory.")
    if len(raw) > MAX_CONTENT_PATH_CHARS:
        raise InvalidContentPathError(
            f"content_path is longer than {MAX_CONTENT_PATH_CHARS} characters."
        )
    text = raw if raw.startswith("/") else raw.rstrip("/")
    return _check_relative(text, what="content_path", error=InvalidContentPathError)


def check_filename(raw: Any) -> str:
    """A file's path inside its source's content path (gallery-dl may use sub-directories)."""
    if not isinstance(raw, str) or not raw:
        raise InvalidFilenameError("filename must be a non-empty relative path.")
    if len(raw) > MAX_FILENAME_CHARS:
        raise InvalidFilenameError(f"filename is longer than {MAX_FILENAME_CHARS} characters.")
    return _check_relative(raw, what="filename", error=InvalidFilenameError)


def check_schedule(raw: Any) -> dict[str, Any] | None:
    """None (no schedule), {"cron": "<5 fields>"} or {"interval_seconds": n}.

    A cron expression is parsed by APScheduler's CronTrigger.from_crontab,
    the same parser the scheduler job computes the next time with, so an
    expression accepted here never fails there.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidScheduleError(
            'schedule must be null, {"cron": "0 3 * * *"} or {"interval_seconds": 3600}.'
        )
    if "cron" in raw:
        return {"cron": check_cron(raw["cron"])}
    if "interval_seconds" in raw:
        return {"interval_seconds": check_interval(raw["interval_seconds"])}
    raise InvalidScheduleError(f"schedule must have 'cron' or 'interval_seconds', got {raw!r}.")


def check_cron(raw: Any) -> str:
    """A five-field crontab expression (UTC), normalised to single spaces."""
    if not isinstance(raw, str) or len(raw) > 200 or _bad_character(raw):
        raise InvalidScheduleError("cron must be a crontab expression such as '0 3 * * *'.")
    text = " ".join(raw.split())
    try:
        CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as exc:
        raise InvalidScheduleError(f"cron {text!r} is not a crontab expression: {exc}.") from None
    return text


def check_interval(raw: Any) -> int:
    """Whole seconds between syncs, from a minute to a year."""
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        raw = int(raw.strip()[:12])
    ok = isinstance(raw, int) and not isinstance(raw, bool)
    if not ok or not MIN_INTERVAL_SECONDS <= raw <= MAX_INTERVAL_SECONDS:
        raise InvalidScheduleError(
            f"interval_seconds must be a whole number from {MIN_INTERVAL_SECONDS} "
            f"to {MAX_INTERVAL_SECONDS}, got {raw!r}."
        )
    return int(raw)


def check_bool(raw: Any, field: str) -> bool:
    """A JSON boolean; "true"/"false" text is refused so that "false" never means true."""
    if not isinstance(raw, bool):
        raise ValidationFailedError(f"{field} must be true or false, got {raw!r}.", field=field)
    return raw


def check_cookies(raw: Any) -> str:
    """Netscape cookies.txt text as gallery-dl reads it (tab-separated, seven fields a line).

    Lines starting with '#' are comments, except curl's "#HttpOnly_" prefix,
    which marks a cookie. The text is checked only for shape: its values are
    the site's business, and they are never shown again.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidCookiesError("cookies must be the non-empty text of a cookies.txt file.")
    if len(raw) > MAX_COOKIES_CHARS or "\x00" in raw or not is_encodable(raw):
        raise InvalidCookiesError(
            f"cookies must be valid text of at most {MAX_COOKIES_CHARS} characters without NUL."
        )
    for number, line in enumerate(raw.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith("#HttpOnly_")):
            continue
        if len(line.rstrip("\r\n").split("\t")) != COOKIE_FIELDS:
            raise InvalidCookiesError(
                f"cookies line {number} does not have {COOKIE_FIELDS} tab-separated fields"
                " (Netscape cookies.txt format).",
                line=number,
            )
    return raw


def checked_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Check every source field present in `body` (the API's and the CLI's rules alike)."""
    fields: dict[str, Any] = {}
    if "url" in body:
        fields["url"] = check_source_url(body["url"])  # http(s), maybe behind "dirlist:"
    if "content_path" in body:
        fields["content_path"] = check_content_path(body["content_path"])
    if "schedule" in body:
        fields["schedule"] = check_schedule(body["schedule"])
    for flag in ("sync_remote_deletes", "enabled"):
        if flag in body:
            fields[flag] = check_bool(body[flag], flag)
    return fields
