"""A loopback gallery and the real coordinator for `distleech worker sync`'s tests.

`gallery`: a werkzeug server over a temp directory, answering each
directory as a listing (nginx-style HTML autoindex, or nginx's
`autoindex_format json`) and each file with Range support, so that
gallery-dl's `dirlist:` extractor (worker/extractors.py) reads it as a
source. It can stall a file halfway (to kill a worker mid-download), fail a
listing, and require a cookie. `/gallery/` itself, and any path with `..`,
lists `escaped.txt`: a hostile listing's `..` directory leads there.

`coordinator`: the real app (conftest's `make_app`, on the test's CouchDB
database and clock) served over real HTTP, with a real worker token for the
worker and an admin (basic auth) for the admin calls. A small WSGI
middleware in front of it, `Recorder`, copies the JSON bodies of the
worker's files, synchronised and renew calls as they pass (it observes; the app
answers them) so tests can say what the worker reported, in order; what the
coordinator made of it is asked of the app (`source`, `file_list`, `known`).
The one thing the real server cannot produce, a compromised coordinator
handing out hostile paths, is the middleware's `tamper_lease`.
"""

from __future__ import annotations

import dataclasses
import html
import io
import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from browser import serving as serving_app
from conftest import Clock
from gazelle_stub import serving
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from app.accounts.auth import add_user, issue_token
from app.store.couch import Database
from scheduler.jobs import reap_expired_leases

# ------------------------------------------------------------------ the gallery


class Gallery:
    """Directories under `root` served as listings; call it as a WSGI app."""

    def __init__(self, root: Path, listing: str = "html") -> None:
        self.root, self.listing = root, listing
        self.url = ""  # set once served
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.failing: set[str] = set()  # listing paths answered 404
        self.cookie: tuple[str, str] | None = None  # required on every request when set
        self.stalled: str | None = None  # a file path answered halfway, then held
        self.stall_started = threading.Event()
        self.release = threading.Event()

    def source_url(self, name: str) -> str:
        return f"dirlist:{self.url}gallery/{name}/"

    def add(self, name: str, files: dict[str, bytes]) -> Path:
        """Write a gallery's files (relative paths) below root/name."""
        for relative, data in files.items():
            path = self.root / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return self.root / name

    def remove(self, name: str, relative: str) -> None:
        (self.root / name / relative).unlink()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append((request.path, request.headers.get("Range")))
        return self.dispatch(request, environ)(environ, start_response)

    def dispatch(self, request: Request, environ: dict[str, Any]) -> Response:
        if self.cookie and request.cookies.get(self.cookie[0]) != self.cookie[1]:
            return Response("login required", 403)
        path = request.path
        if path == "/gallery/" or "/../" in path:  # where a listing's `..` leads
            return self.render(path, [("escaped.txt", False)])
        if not path.startswith("/gallery/") or path in self.failing:
            return Response("not found", 404)
        local = self.root / path.removeprefix("/gallery/")
        if path.endswith("/") and local.is_dir():
            entries = [(p.name, p.is_dir()) for p in sorted(local.iterdir())]
            return self.render(path, entries)
        if path == self.stalled:
            return self.stall(local)
        if local.is_file():
            return send_file(local, environ, conditional=True)
        return Response("not found", 404)

    def render(self, path: str, entries: list[tuple[str, bool]]) -> Response:
        """nginx's autoindex, as HTML or as `autoindex_format json`."""
        if self.listing == "json":
            body = [{"name": n, "type": "directory" if d else "file"} for n, d in entries]
            return Response(json.dumps(body), content_type="application/json")
        links = "\n".join(
            f'<a href="{html.escape(quote(n) + ("/" if d else ""))}">{html.escape(n)}</a>'
            for n, d in entries
        )
        page = f'<html><body><h1>Index of {path}</h1><pre><a href="../">../</a>\n{links}</pre>'
        return Response(page + "</body></html>", content_type="text/html")

    def stall(self, local: Path) -> Response:
        """Send half of the file, then hold the connection until released (or killed)."""
        data = local.read_bytes()
        half = len(data) // 2

        def body() -> Iterator[bytes]:
            yield data[:half]
            self.stall_started.set()
            self.release.wait(30)

        headers = {"Content-Length": str(len(data))}
        return Response(body(), content_type="application/octet-stream", headers=headers)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    served = Gallery(tmp_path / "remote")
    served.root.mkdir()
    with serving(served) as url:
        served.url = url
        yield served
        served.release.set()


# ------------------------------------------------------------------ the coordinator

WORKER_CALLS = ("files", "synchronised", "renew")  # POST /api/sources/<id>/<call>
ADMIN = ("root", "correct horse battery")


def _source_call(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(source id, call) of a worker's POST /api/sources/<id>/<one of WORKER_CALLS>, else None."""
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    if environ["REQUEST_METHOD"] != "POST" or len(parts) != 4 or parts[:2] != ["api", "sources"]:
        return None
    return (parts[2], parts[3]) if parts[3] in WORKER_CALLS else None


def _drain(result: Any) -> bytes:
    """A WSGI response's whole body, closing it as a server would."""
    try:
        return b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()


class Recorder:
    """WSGI middleware around the real app: notes what workers report, passes it on unchanged.

    For each POST /api/sources/<id>/files, /synchronised or /renew it copies the JSON
    body, lets the app answer, and keeps the body with the app's status; the
    request and the answer go through untouched. `tamper_lease` is the one
    exception, used only by tests that need a compromised coordinator.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: dict[str, list[tuple[str, int, Any]]] = defaultdict(list)  # id -> calls
        self.tampered: dict[str, Callable[[dict[str, Any]], None]] = {}  # source id -> change
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        call = _source_call(environ)
        if call is not None:
            return self.observe(call, environ, start_response)
        if environ.get("PATH_INFO") == "/api/sources/next" and self.tampered:
            return self.tamper(environ, start_response)
        return self.app(environ, start_response)

    def observe(self, call: tuple[str, str], environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # the app reads the very same bytes
        status: list[int] = []

        def noting(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(code.split()[0]))
            return start_response(code, headers, exc_info)

        body = _drain(self.app(environ, noting))
        try:
            sent = json.loads(raw)
        except ValueError:
            sent = raw.decode("utf-8", "replace")
        with self._lock:
            self.calls[call[0]].append((call[1], status[0], sent))
        return [body]

    def tamper(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Play a compromised coordinator: rewrite one lease response of a tampered source.

        The real server never stores what such a lease holds (`..` or absolute
        known files, unsafe content paths: app/sources/checks.py refuses them),
        so this is the only way a test can hand a worker one.
        """
        answered: list[Any] = []

        def keeping(code: str, headers: Any, exc_info: Any = None) -> Any:
            answered.append((code, headers))
            return lambda data: None

        raw = _drain(self.app(environ, keeping))
        code, headers = answered[0]
        if code.startswith("200"):
            order = json.loads(raw)
            change = self.tampered.pop(order["source_id"], None)
            if change is not None:
                change(order)
                raw = json.dumps(order).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(raw))))
        start_response(code, headers)
        return [raw]

    def bodies(self, source_id: str, call: str) -> list[Any]:
        with self._lock:
            return [sent for name, status, sent in self.calls[source_id] if name == call]

    def refused(self) -> list[tuple[str, str, int, Any]]:
        """Worker calls the app answered with an error: a contract mismatch, unless a test says."""
        with self._lock:
            return [
                (source_id, name, status, sent)
                for source_id, calls in self.calls.items()
                for name, status, sent in calls
                if status >= 400
            ]


@dataclasses.dataclass
class CoordinatorFixture:
    """The real coordinator over HTTP, and what the tests ask of it."""

    url: str  # the app's base URL, without a trailing slash
    token: str  # a real worker token ("sync-1")
    db: Database
    clock: Clock
    settings: Any
    recorder: Recorder
    admin: requests.Session  # basic auth as the admin "root"
    _ids: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        """An admin call; its JSON answer, after checking its status."""
        response = self.admin.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response.json() if response.content else None

    def add_source(self, url: str, content_path: str, **fields: Any) -> str:
        """POST /api/sources with a new id (never "next"); cookies go through PUT …/cookies."""
        source_id = f"src-{next(self._ids)}"
        cookies = fields.pop("cookies", None)
        body = {"id": source_id, "url": url, "content_path": content_path, **fields}
        self.call("POST", "/api/sources", 201, json=body)
        if cookies is not None:
            self.call("PUT", f"/api/sources/{source_id}/cookies", json={"cookies": cookies})
        return source_id

    def order_sync(self, source_id: str) -> dict[str, Any]:
        """POST /api/sources/<id>/sync: a new order (202), as an admin orders it."""
        return dict(self.call("POST", f"/api/sources/{source_id}/sync", 202))

    def expire_leases(self) -> int:
        """Let every lease run out (`sources.sync_minutes`), then run the scheduler's reaper."""
        self.clock.advance(minutes=self.settings.sources.sync_minutes + 1)
        return reap_expired_leases(self.db, self.clock())

    def tamper_lease(self, source_id: str, **fields: Any) -> None:
        """Play a compromised coordinator once: the source's next lease carries `fields`.

        Only for what the real server cannot hand out (see Recorder.tamper).
        """
        self.recorder.tampered[source_id] = lambda order: order.update(fields)

    # what the worker reported, in order (copied on the way in)

    def files(self, source_id: str) -> list[dict[str, Any]]:
        return [f for body in self.recorder.bodies(source_id, "files") for f in body["files"]]

    def ends(self, source_id: str) -> list[dict[str, Any]]:
        return list(self.recorder.bodies(source_id, "synchronised"))

    # what the coordinator made of it (asked of the app, as an admin sees it)

    def source(self, source_id: str) -> dict[str, Any]:
        """GET /api/sources/<id>: the source, its order, its history and its file counts."""
        return dict(self.call("GET", f"/api/sources/{source_id}"))

    def file_list(self, source_id: str) -> list[dict[str, Any]]:
        """GET /api/sources/<id>/files, every page: the coordinator's files, by name."""
        listed: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {"limit": "1000", **({"after": after} if after else {})}
            page = self.call("GET", f"/api/sources/{source_id}/files", params=params)
            listed += page["files"]
            if not (after := page["next"]):
                return listed

    def known(self, source_id: str) -> set[str]:
        """The files the coordinator records as present (a worker's next `known_files`)."""
        return {f["filename"] for f in self.file_list(source_id) if f["present"]}


@pytest.fixture
def coordinator(make_app: Any, db: Database, clock: Clock) -> Iterator[CoordinatorFixture]:
    """The real app over HTTP, a worker token and an admin; fails on a refused worker call."""
    app = make_app()
    token = issue_token(db, "sync-1", "worker", actor="test", now=clock())
    add_user(db, *ADMIN, admin=True, actor="test", now=clock())
    recorder = Recorder(app)
    with serving_app(recorder) as url, requests.Session() as admin:
        admin.auth = ADMIN
        settings = app.extensions["distleech"].settings
        yield CoordinatorFixture(url, token, db, clock, settings, recorder, admin)
    # every worker call went through: a refusal is a mismatch of the contract
    assert recorder.refused() == []
