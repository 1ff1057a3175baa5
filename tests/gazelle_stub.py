"""A stand-in Gazelle site for the workers' tests, and a helper that serves any WSGI app.

We cannot run a Gazelle site here, so this answers the documented JSON API
(../shared/originals/README.md): envelopes, `action=index|browse|artist|
torrent|torrentgroup|download`, HTML-escaped names, `fileList` as
`name{{{size}}}` joined by `|||`, and both .torrent URL forms (classic
`torrents.php?action=download&id&authkey&torrent_pass` and the newer
`ajax.php?action=download&id` with an API token). Its torrents are real:
made with torf over real files on disk.

It enforces the site's rate limit the way a site sees it: every request is
stamped on arrival, and one that makes more than `rate_requests` arrivals
within `rate_window` seconds is refused with 429 and counted in `refused`,
so a test can prove that a worker never crossed it.

The real BitTorrent clients the download worker drives (aria2, Transmission)
are started here too, on loopback, with DHT, LSD, PEX and port mapping off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import itertools
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import torf
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ANNOUNCE = "http://127.0.0.1:9/announce"  # nothing listens there: no peer ever connects


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 and a free port from a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def with_worker_endpoints(app: Any) -> Any:
    """Register the cache and torrents blueprints if app/api/__init__.py does not (yet)."""
    from app.api import cache, torrents

    for module in (cache, torrents):
        if module.bp.name not in app.blueprints:
            app.register_blueprint(module.bp)
    return app


def escape(text: str) -> str:
    """HTML-escape as Gazelle stores names (apostrophes as &#39;)."""
    return html.escape(text, quote=True).replace("&#x27;", "&#39;")


def write_release(root: Path, files: dict[str, int], seed: int = 0) -> Path:
    """Write files of the given sizes (relative paths) with reproducible content under root."""
    rng = random.Random(seed)
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


@dataclasses.dataclass
class StubTorrent:
    id: int
    group: StubGroup
    path: Path
    data: bytes
    info_hash: str  # upper-case hex, as Gazelle shows it
    files: list[tuple[str, int]]  # paths inside the torrent (below filePath), sizes
    file_path: str  # the top directory; "" for a single-file torrent
    media: str = "CD"
    format: str = "FLAC"
    encoding: str = "Lossless"
    has_log: bool = False
    log_score: int = 0
    has_cue: bool = False
    seeders: int = 5

    def listing(self) -> dict[str, Any]:
        """The keys every torrent listing shares (artist, torrentgroup, browse, torrent)."""
        return {
            "media": self.media,
            "format": self.format,
            "encoding": self.encoding,
            "remastered": False,
            "remasterYear": 0,
            "remasterTitle": "",
            "remasterRecordLabel": "",
            "remasterCatalogueNumber": "",
            "scene": False,
            "hasLog": self.has_log,
            "hasCue": self.has_cue,
            "logScore": self.log_score,
            "fileCount": len(self.files),
            "size": sum(size for _, size in self.files),
            "seeders": self.seeders,
            "leechers": 0,
            "freeTorrent": False,
            "time": "2017-03-01 12:00:00",
        }

    def details(self) -> dict[str, Any]:
        """The `torrent` object of action=torrent, with infoHash, fileList and filePath."""
        return {
            "id": self.id,
            "infoHash": self.info_hash,
            **self.listing(),
            "snatched": 3,
            "description": "",
            "fileList": "|||".join(
                f"{escape(name)}{{{{{{{size}}}}}}}" for name, size in self.files
            ),
            "filePath": escape(self.file_path),
            "userId": 1,
            "username": "uploader",
        }


@dataclasses.dataclass
class StubGroup:
    id: int
    name: str
    artists: list[str]
    year: int
    release_type: int = 1  # Album
    torrents: list[StubTorrent] = dataclasses.field(default_factory=list)

    @property
    def display_artist(self) -> str:
        return " & ".join(self.artists)

    def info(self) -> dict[str, Any]:
        """The `group` object of action=torrent / torrentgroup."""
        return {
            "id": self.id,
            "name": escape(self.name),
            "year": self.year,
            "recordLabel": "",
            "catalogueNumber": "",
            "releaseType": self.release_type,
            "categoryId": 1,
            "categoryName": "Music",
            "time": "2017-03-01 12:00:00",
            "vanityHouse": False,
            "musicInfo": {
                "artists": [{"id": i + 1, "name": escape(a)} for i, a in enumerate(self.artists)],
                "with": [],
                "composers": [],
                "dj": [],
                "conductor": [],
                "remixedBy": [],
                "producer": [],
            },
            "tags": ["rock"],
        }


def _words(text: str) -> set[str]:
    return set("".join(c if c.isalnum() else " " for c in text.casefold()).split())


class GazelleStub:
    """A Gazelle site's API over real torrents; call it as a WSGI app."""

    def __init__(
        self,
        *,
        api_key: str = "api-token-1",
        session: str = "session-cookie-1",
        authkey: str = "authkey-1",
        passkey: str = "passkey-1",
        rate_requests: int = 5,
        rate_window: float = 10.0,
    ) -> None:
        self.api_key, self.session = api_key, session
        self.authkey, self.passkey = authkey, passkey
        self.rate_requests, self.rate_window = rate_requests, rate_window
        self.groups: dict[int, StubGroup] = {}
        self.torrents: dict[int, StubTorrent] = {}
        self.arrivals: list[float] = []  # monotonic arrival times of every request
        self.log: list[tuple[str, dict[str, str]]] = []  # (path, query) of every request
        self.refused = 0
        self._lock = threading.Lock()
        self._group_ids = itertools.count(101)
        self._torrent_ids = itertools.count(1001)

    # ------------------------------------------------------------ content

    def add_group(self, artists: str | list[str], name: str, year: int = 2006) -> StubGroup:
        names = [artists] if isinstance(artists, str) else artists
        group = StubGroup(next(self._group_ids), name, names, year)
        self.groups[group.id] = group
        return group

    def add_torrent(self, group: StubGroup, path: Path, **fields: Any) -> StubTorrent:
        """Make a real private .torrent over `path` (a file or a directory) for a group."""
        made = torf.Torrent(path=path, trackers=[ANNOUNCE], private=True)
        made.generate()
        data = made.dump()
        if path.is_dir():
            files = [(str(Path(*f.parts[1:]).as_posix()), f.size) for f in made.files]
            file_path = made.name
        else:
            files, file_path = [(made.name, made.size)], ""
        torrent = StubTorrent(
            id=next(self._torrent_ids),
            group=group,
            path=path,
            data=data,
            info_hash=str(made.infohash).upper(),
            files=files,
            file_path=file_path,
            **fields,
        )
        group.torrents.append(torrent)
        self.torrents[torrent.id] = torrent
        return torrent

    def delete_torrent(self, torrent: StubTorrent) -> None:
        """Trumped or deleted: gone from listings, action=torrent and downloads."""
        torrent.group.torrents.remove(torrent)
        del self.torrents[torrent.id]

    # ------------------------------------------------------------ observations

    def count(self, action: str) -> int:
        return sum(1 for _, query in self.log if query.get("action") == action)

    def max_in_window(self, window: float | None = None) -> int:
        """The most arrivals within any `window` seconds (default: the site's window)."""
        span = self.rate_window if window is None else window
        times, most, start = sorted(self.arrivals), 0, 0
        for end, at in enumerate(times):
            while times[start] <= at - span:
                start += 1
            most = max(most, end - start + 1)
        return most

    # ------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            now = time.monotonic()
            recent = sum(1 for at in self.arrivals if at > now - self.rate_window)
            self.arrivals.append(now)
            self.log.append((request.path, dict(request.args)))
            limited = recent >= self.rate_requests
            if limited:
                self.refused += 1
        if limited:
            response = self._failure("Rate limit exceeded", 429)
        else:
            response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        args = request.args
        if request.path == "/torrents.php" and args.get("action") == "download":
            return self.classic_download(args)
        if request.path != "/ajax.php":
            return Response("<html>not found</html>", 404, content_type="text/html")
        if not self._logged_in(request):
            return self._failure("bad credentials", 401)
        handler = getattr(self, f"action_{args.get('action', '')}", None)
        if handler is None:
            return self._failure("bad parameters")
        if args.get("action") == "download":
            return handler(request)
        result = handler(args)
        return result if isinstance(result, Response) else self._success(result)

    def _logged_in(self, request: Request) -> bool:
        token = request.headers.get("Authorization", "")
        return bool(
            (self.api_key and token == self.api_key)
            or (self.session and request.cookies.get("session") == self.session)
        )

    @staticmethod
    def _success(payload: Any) -> Response:
        body = json.dumps({"status": "success", "response": payload})
        return Response(body, 200, content_type="application/json")

    @staticmethod
    def _failure(error: str, status: int = 200) -> Response:
        body = json.dumps({"status": "failure", "error": error})
        return Response(body, status, content_type="application/json")

    def _torrent_file(self, torrent_id: str | None) -> Response:
        torrent = self.torrents.get(int(torrent_id)) if (torrent_id or "").isdigit() else None
        if torrent is None:
            return self._failure("bad id parameter", 404)
        return Response(torrent.data, 200, content_type="application/x-bittorrent")

    def classic_download(self, args: Any) -> Response:
        """torrents.php?action=download: no login needed, authkey and torrent_pass are."""
        if args.get("authkey") != self.authkey or args.get("torrent_pass") != self.passkey:
            return Response("<html>login</html>", 403, content_type="text/html")
        return self._torrent_file(args.get("id"))

    def action_download(self, request: Request) -> Response:
        """ajax.php?action=download: newer forks, API token only."""
        if not self.api_key or request.headers.get("Authorization") != self.api_key:
            return self._failure("API token required", 403)
        return self._torrent_file(request.args.get("id"))

    def action_index(self, args: Any) -> dict[str, Any]:
        return {"username": "worker", "id": 7, "authkey": self.authkey, "passkey": self.passkey}

    def action_artist(self, args: Any) -> Any:
        wanted = (args.get("artistname") or "").casefold()
        groups = [g for g in self.groups.values() if wanted in (a.casefold() for a in g.artists)]
        if not wanted or not groups:
            return self._failure("bad parameters")
        name = next(a for a in groups[0].artists if a.casefold() == wanted)
        return {
            "id": 1,
            "name": escape(name),
            "notificationsEnabled": False,
            "hasBookmarked": False,
            "image": "",
            "body": "",
            "vanityHouse": False,
            "tags": [],
            "similarArtists": [],
            "statistics": {"numGroups": len(groups)},
            "torrentgroup": [
                {
                    "groupId": g.id,
                    "groupName": escape(g.name),
                    "groupYear": g.year,
                    "groupRecordLabel": "",
                    "groupCatalogueNumber": "",
                    "releaseType": g.release_type,
                    "torrent": [
                        {"id": t.id, "groupId": g.id, **t.listing(), "snatched": 3}
                        for t in g.torrents
                    ],
                }
                for g in groups
            ],
            "requests": [],
        }

    def action_browse(self, args: Any) -> dict[str, Any]:
        """Every word of searchstr must be in the group's artist or name, in any order."""
        wanted = _words(html.unescape(args.get("searchstr", "")))
        results = [
            {
                "groupId": g.id,
                "groupName": escape(g.name),
                "artist": escape(g.display_artist),
                "groupYear": g.year,
                "releaseType": g.release_type,
                "tags": ["rock"],
                "torrents": [
                    {"torrentId": t.id, "editionId": 1, **t.listing(), "snatches": 3}
                    for t in g.torrents
                ],
            }
            for g in self.groups.values()
            if wanted and wanted <= _words(g.display_artist + " " + g.name)
        ]
        return {"currentPage": 1, "pages": 1, "results": results}

    def action_torrent(self, args: Any) -> Any:
        torrent_id = args.get("id", "")
        torrent = self.torrents.get(int(torrent_id)) if torrent_id.isdigit() else None
        if torrent is None:
            return self._failure("bad id parameter")
        return {"group": torrent.group.info(), "torrent": torrent.details()}

    def action_torrentgroup(self, args: Any) -> Any:
        group_id = args.get("id", "")
        group = self.groups.get(int(group_id)) if group_id.isdigit() else None
        if group is None:
            return self._failure("bad id parameter")
        listed = [{"id": t.id, **t.listing()} for t in group.torrents]
        return {"group": group.info(), "torrents": listed}


# ---------------------------------------------------------------- real BitTorrent clients


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen, log: Path, **post: Any) -> None:
    """Poll an RPC URL until it answers anything HTTP (401/409 count), or fail with the log."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            requests.post(url, timeout=1, **post)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{log.name}: RPC did not come up: {log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclasses.dataclass(frozen=True)
class RunningClient:
    kind: str
    rpc_url: str
    secret: str = ""
    username: str = ""
    password: str = ""


ARIA2_MISSING = "aria2c is not installed (apt-get install -y aria2)"
TRANSMISSION_MISSING = (
    "transmission-daemon is not installed "
    "(apt-get install -y --no-install-recommends transmission-daemon)"
)


@contextlib.contextmanager
def running_aria2(workdir: Path) -> Iterator[RunningClient]:
    """aria2c with JSON-RPC on a free loopback port and a secret; nothing leaves the machine."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, secret, log = free_port(), "aria2-secret", workdir / "aria2.log"
    command = [
        shutil.which("aria2c") or "aria2c",
        "--no-conf=true",
        "--enable-rpc=true",
        "--rpc-listen-all=false",
        f"--rpc-listen-port={port}",
        f"--rpc-secret={secret}",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        f"--listen-port={free_port()}",
        f"--dir={workdir / 'default'}",
        "--quiet=true",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/jsonrpc"
    try:
        _wait_for(
            url, process, log, json={"jsonrpc": "2.0", "id": 0, "method": "system.listMethods"}
        )
        yield RunningClient("aria2", url, secret=secret)
    finally:
        _stop(process)


@contextlib.contextmanager
def running_transmission(workdir: Path) -> Iterator[RunningClient]:
    """transmission-daemon with RPC on a free loopback port, basic auth, no DHT/LSD/PEX/uTP."""
    config = workdir / "config"
    config.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), workdir / "transmission.log"
    settings = {
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "bind-address-ipv4": "127.0.0.1",
        "bind-address-ipv6": "::1",
        "peer-port": free_port(),
        "peer-port-random-on-start": False,
        "rpc-enabled": True,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": port,
        "rpc-whitelist-enabled": True,
        "rpc-whitelist": "127.0.0.1",
        "rpc-host-whitelist-enabled": False,
        "rpc-authentication-required": True,
        "rpc-username": "rpc-user",
        "rpc-password": "rpc-password",
        "download-dir": str(workdir / "default"),
        "incomplete-dir-enabled": False,
        "watch-dir-enabled": False,
        "message-level": 1,
    }
    (config / "settings.json").write_text(json.dumps(settings))
    command = [
        shutil.which("transmission-daemon") or "transmission-daemon",
        "-f",
        "-g",
        str(config),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/transmission/rpc"
    try:
        _wait_for(url, process, log)
        yield RunningClient("transmission", url, username="rpc-user", password="rpc-password")
    finally:
        _stop(process)


def aria2_downloads(client: RunningClient) -> list[dict[str, Any]]:
    """What aria2 holds, asked over its RPC: tellActive + tellWaiting."""
    keys = ["gid", "infoHash", "dir", "status"]

    def call(method: str, *params: Any) -> Any:
        payload = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": method,
            "params": [f"token:{client.secret}", *params],
        }
        return requests.post(client.rpc_url, json=payload, timeout=10).json()["result"]

    return [*call("aria2.tellActive", keys), *call("aria2.tellWaiting", 0, 1000, keys)]


def transmission_torrents(client: RunningClient) -> list[dict[str, Any]]:
    """What Transmission holds, asked with a raw torrent-get (and its 409 session dance)."""
    auth = (client.username, client.password)
    body = {"method": "torrent-get", "arguments": {"fields": ["hashString", "downloadDir", "name"]}}
    response = requests.post(client.rpc_url, json=body, auth=auth, timeout=10)
    if response.status_code == 409:
        headers = {"X-Transmission-Session-Id": response.headers["X-Transmission-Session-Id"]}
        response = requests.post(client.rpc_url, json=body, auth=auth, headers=headers, timeout=10)
    return list(response.json()["arguments"]["torrents"])
