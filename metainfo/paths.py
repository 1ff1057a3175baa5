"""The one rule for relative paths that end up joined under a content root.

A source's content path and every file name a worker reports are joined
under a worker's content root and written or deleted there. The coordinator
refuses what breaks this rule (app/sources/checks.py) and the worker checks
a lease against the very same rule (worker/sync.py), so both sides agree on
what "inside the root" means. It lives here, not in app/, because importing
anything under app/ starts the Flask application package, which a worker
must not need; like the rest of metainfo it is pure (no I/O, no imports of
ours).

Only what is unsafe on the POSIX systems the worker runs on is refused: an
absolute path, an empty, `.` or `..` segment, a backslash (a separator
elsewhere, and a second spelling of one name), control characters, and
text that cannot be written as UTF-8 (a lone surrogate). `x:y.jpg` is a
legal file name here and passes.
"""

from __future__ import annotations


def is_bad_character(char: str) -> bool:
    """NUL, other control characters (C0, DEL, C1) or a backslash."""
    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or char == "\\"


def relative_path_problem(text: str) -> str | None:
    """Why `text` is not a plain relative `/`-separated path, or None when it is one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    if any(is_bad_character(char) for char in text):
        return "must not contain control characters or backslashes"
    if text.startswith("/"):
        return "must be relative"
    if any(part in ("", ".", "..") for part in text.split("/")):
        return "must not have empty, '.' or '..' segments"
    return None


def overlaps(first: str, second: str) -> bool:
    """True when one checked relative path is the other or lies below it ("a" and "a/b")."""
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")
