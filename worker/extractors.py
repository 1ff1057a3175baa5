"""gallery-dl extractors of our own: a web server's directory listing as a gallery.

Many sources worth mirroring are plain directories behind a web server:
nginx's or Apache's autoindex, a Python `http.server`, a static site with a
JSON manifest. gallery-dl's generic extractor drops the port and wants media
pages, and its `directlink` handles one file at a time, so a source URL
written `dirlist:<http(s) URL of a directory>` is read here instead:

- a JSON answer is nginx's `autoindex_format json` (a list of
  `{"name", "type": "file"|"directory"}`, which is also the simplest manifest
  to write by hand);
- anything else is HTML, and every link to a direct child of the directory
  counts (a link ending in `/` is a subdirectory, read in turn);
  sorting links, parent links, query strings and links elsewhere are ignored.

Files keep their place below the listed directory. The names are the
remote's: this extractor does not judge them; the sync job refuses any path
that would leave the content directory (worker/gallery.py), so that one
guard covers every extractor.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from gallery_dl import text
from gallery_dl.extractor.common import Extractor, Message

MAX_DEPTH = 32  # a listing that nests deeper is a loop (symlinks) or not a listing
_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


class DirectoryListingExtractor(Extractor):
    """Every file below a directory listing, in its subdirectories."""

    category = "dirlist"
    subcategory = "directory"
    # an expression: the list of subdirectories becomes one path segment each
    directory_fmt = ("\fE subdirectories",)
    filename_fmt = "{filename}.{extension}"
    archive_fmt = "{path}"
    pattern = r"dirlist:(https?://[^?#]+)$"
    example = "dirlist:https://example.org/pub/pictures/"

    def items(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """Yield a Directory message per file (its subdirectories change) and its Url."""
        root = self.groups[0] if self.groups[0].endswith("/") else self.groups[0] + "/"
        for segments, url in self._walk(root, [], 0):
            data: dict[str, Any] = {
                "path": "/".join(segments),
                "subdirectories": segments[:-1],
            }
            text.nameext_from_name(segments[-1], data)
            yield Message.Directory, "", data
            yield Message.Url, url, data

    def _walk(self, url: str, segments: list[str], depth: int) -> Iterator[tuple[list[str], str]]:
        """Files below `url` as (path segments, URL), depth first, in listing order."""
        if depth > MAX_DEPTH:
            raise self.exc.AbortExtraction(f"{url}: listing nested deeper than {MAX_DEPTH}")
        for name, is_dir in self._entries(url):
            child = urljoin(url, _quote_segment(name) + ("/" if is_dir else ""))
            if is_dir:
                yield from self._walk(child, [*segments, name], depth + 1)
            else:
                yield [*segments, name], child

    def _entries(self, url: str) -> list[tuple[str, bool]]:
        """The listing's (name, is directory) pairs; an unreadable listing aborts the job."""
        response = self.request(url)
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "application/json" or response.text.lstrip().startswith("["):
            return _json_entries(response.json())
        return _html_entries(url, response.text)


def _json_entries(listing: Any) -> list[tuple[str, bool]]:
    """nginx `autoindex_format json`: [{"name": …, "type": "file"|"directory"|…}]."""
    if not isinstance(listing, list):
        raise ValueError("a JSON listing must be a list of entries")
    entries = []
    for entry in listing:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            if entry.get("type") in ("file", "directory"):
                entries.append((entry["name"], entry["type"] == "directory"))
    return entries


def _html_entries(url: str, page: str) -> list[tuple[str, bool]]:
    """Links to direct children of `url` in an autoindex page, first occurrence each."""
    base = urlsplit(url)
    seen: dict[str, bool] = {}
    for match in _HREF.finditer(page):
        href = text.unescape(next(group for group in match.groups() if group is not None))
        target = urlsplit(urljoin(url, href))
        if target.query or (target.scheme, target.netloc) != (base.scheme, base.netloc):
            continue  # Apache's sort links (?C=N;O=D), other hosts
        if not target.path.startswith(base.path) or target.path == base.path:
            continue  # the parent directory, absolute links elsewhere, the page itself
        rest = target.path[len(base.path) :]
        name, slash, beyond = rest.partition("/")
        if name and not beyond:
            seen.setdefault(unquote(name), bool(slash))
    return list(seen.items())


def _quote_segment(name: str) -> str:
    """A name as one URL path segment (a `/` or `..` inside it stays a name, not a path)."""
    return quote(name, safe="") if name not in (".", "..") else name.replace(".", "%2E")
