"""gallery-dl in-process: fetch one source into its content directory, file by file.

The original ran gallery-dl with a hook script per file (downloaded or
skipped). In-process the same two moments are gallery-dl's own job hooks:
`after` (a file was downloaded and moved from its `.part` file to its name)
and `skip` (the file is already there). A `DownloadJob` subclass registers
both, so a file is reported only once it is complete under its final name:
an interrupted download stays a `.part` file, which is never reported, and
gallery-dl resumes it next time (HTTP Range) instead of skipping it.

Every path gallery-dl is about to write or skip is checked first: it must
lie inside the content directory with no symlink on the way, or the file is
refused (never written, never hashed) and the sync fails. gallery-dl's own sanitising
only replaces `/` inside one name; a directory segment `..` from a hostile
listing would otherwise climb out.

gallery-dl's configuration is process-global, so `configure` replaces all of
it for each sync: this process runs one sync at a time, and neither a
user's gallery-dl config file nor its cache or archive is read or written.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gallery_dl import config, extractor, job

from worker.extractors import DirectoryListingExtractor

log = logging.getLogger(__name__)

PRODUCT_EXTRACTORS = (DirectoryListingExtractor,)
CHUNK = 1 << 20


class UnsupportedSourceError(Exception):
    """No gallery-dl extractor handles the source's URL."""


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One file as the coordinator records it."""

    filename: str  # relative to the content directory, `/`-separated
    status: str  # downloaded | skipped | missing_remotely | deleted
    size: int | None = None
    sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"filename": self.filename, "status": self.status}
        if self.size is not None:
            body.update(size=self.size, sha256=self.sha256)
        return body


@dataclasses.dataclass
class Fetch:
    """What one gallery-dl run saw: every remote file, what it refused, its exit status."""

    content_dir: Path
    on_file: Callable[[FileResult], None]
    seen: set[str] = dataclasses.field(default_factory=set)
    refused: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    status: int = 0

    @property
    def complete(self) -> bool:
        """The listing and every download went through, and nothing was refused."""
        return self.status == 0 and not self.refused and not self.errors


def relative_inside(root: Path, path: str | os.PathLike[str]) -> str | None:
    """`path` relative to `root` (`/`-separated) if it lies inside root, else None.

    `root` must be resolved already (worker/sync.content_directory returns
    it so) and is not resolved again: were it a link, following it here is
    what once let a symlinked content directory lead writes out of the
    content root. Below the root no symlink is followed: a path whose real
    location differs from its plain spelling (a link on the way, even one to
    a file inside) is refused, so nothing is written, hashed or reported
    under another file's name. Such a link is not ours: the sync fails and
    says so, and an operator removes it.
    """
    base = os.path.abspath(root)
    plain = os.path.normpath(os.path.abspath(path))
    if os.path.realpath(path) != plain:
        return None
    if plain == base or os.path.commonpath([base, plain]) != base:
        return None
    return Path(os.path.relpath(plain, base)).as_posix()


def hash_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in chunks (galleries hold videos too)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class ReportingJob(job.DownloadJob):
    """A DownloadJob that reports each file downloaded or skipped, and refuses escapes.

    gallery-dl builds child jobs as `self.__class__(extractor, parent)`, so a
    child finds the Fetch through its parent.
    """

    hooks: Any  # gallery-dl's: event name -> callbacks (a tuple until something registers)

    def __init__(self, extr: Any, parent: ReportingJob | None = None, fetch: Fetch | None = None):
        super().__init__(extr, parent)
        found = fetch if fetch is not None else getattr(parent, "fetch", None)
        if found is None:
            raise ValueError("a ReportingJob needs a Fetch or a parent that has one")
        self.fetch: Fetch = found

    def initialize(self, kwdict: dict[str, Any] | None = None) -> None:
        """Set gallery-dl up, then register the two hooks the original used scripts for."""
        super().initialize(kwdict)
        if not isinstance(self.hooks, collections.defaultdict):
            # without postprocessors gallery-dl leaves hooks an empty tuple
            self.hooks = collections.defaultdict(list)
        self.register_hooks({"after": self._downloaded, "skip": self._skipped})

    def handle_url(self, url: str, kwdict: dict[str, Any]) -> None:
        """Refuse a file whose path leaves the content directory; remember the rest as seen."""
        pathfmt = self.pathfmt
        pathfmt.set_filename(kwdict)  # gallery-dl does it again; it only maps the extension
        target = pathfmt.realdirectory + pathfmt.build_filename(kwdict)
        relative = relative_inside(self.fetch.content_dir, target)
        if relative is None:
            log.error("refused %s: %r would be outside the content directory", url, target)
            self.fetch.refused.append(target)
            return
        self.fetch.seen.add(relative)
        super().handle_url(url, kwdict)

    def _downloaded(self, pathfmt: Any) -> None:
        self._report(pathfmt.realpath, "downloaded")

    def _skipped(self, pathfmt: Any) -> None:
        self._report(pathfmt.realpath, "skipped")

    def _report(self, realpath: str, status: str) -> None:
        relative = relative_inside(self.fetch.content_dir, realpath)
        if relative is None:  # checked before; the extension may change after the download
            self.fetch.refused.append(realpath)
            return
        path = Path(realpath)
        if not path.is_file():
            log.warning("%s %s is not a file; not reported", status, realpath)
            return
        self.fetch.seen.add(relative)
        size, sha256 = hash_file(path)
        self.fetch.on_file(FileResult(relative, status, size, sha256))


def find_extractor(url: str) -> Any:
    """Our extractors first (their URLs carry a prefix), then gallery-dl's own."""
    for cls in PRODUCT_EXTRACTORS:
        if found := cls.from_url(url):
            return found
    if found := extractor.find(url):
        return found
    raise UnsupportedSourceError(f"no gallery-dl extractor handles {url}")


def configure(content_dir: Path, cookies_file: Path | None, category: str) -> None:
    """Replace gallery-dl's whole configuration with one sync's settings."""
    config.clear()
    options: dict[str, Any] = {
        "base-directory": str(content_dir),
        "skip": True,  # a file already there is skipped (and reported as skipped)
        "archive": None,  # presence on disk decides, as in the original
        "postprocessors": None,
        "whitelist": [category],  # child galleries only from the source's own site
        # names the coordinator can record (app/sources/checks.py): no backslash (replaced
        # by "_", as "/" is), no control character (C0, DEL, C1: removed)
        "path-restrict": "/\\\\",
        "path-remove": "\x00-\x1f\x7f-\x9f",
        "ytdl": False,
        "cookies-update": False,
    }
    if cookies_file is not None:
        options["cookies"] = str(cookies_file)
    for key, value in options.items():
        config.set(("extractor",), key, value)
    config.set(("downloader",), "part", True)  # incomplete files keep a .part suffix
    config.set(("downloader",), "progress", None)
    config.set(("downloader", "ytdl"), "enabled", False)
    config.set(("output",), "mode", "null")  # nothing on stdout: the worker logs
    config.set(("output",), "skip", False)
    config.set(("cache",), "file", ":memory:")  # no cache database in $HOME


@contextmanager
def private_cookies(text: str | None) -> Iterator[Path | None]:
    """The order's cookies.txt in a file only we can read, removed afterwards."""
    if not text:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="distleech-cookies-") as directory:
        path = Path(directory) / "cookies.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text if text.endswith("\n") else text + "\n")
        yield path


class _ErrorLog(logging.Handler):
    """gallery-dl reports failures by logging them; keep them for the sync's reason."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.name}: {record.getMessage()}")


def fetch_source(
    url: str, content_dir: Path, cookies: str | None, on_file: Callable[[FileResult], None]
) -> Fetch:
    """Run gallery-dl over a source URL into content_dir; report files as they come."""
    extr = find_extractor(url)
    fetch = Fetch(content_dir=content_dir, on_file=on_file)
    handler = _ErrorLog(fetch.errors)
    with private_cookies(cookies) as cookies_file:
        configure(content_dir, cookies_file, extr.category)
        logging.getLogger().addHandler(handler)
        try:
            fetch.status = ReportingJob(extr, fetch=fetch).run()
        finally:
            logging.getLogger().removeHandler(handler)
            config.clear()
    return fetch
