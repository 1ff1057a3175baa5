"""Real torrents for the registry, ingest and verification tests: files on disk, .torrent
files made with torf over them, and Gazelle action=torrent responses that describe them."""

from __future__ import annotations

import html
import io
import random
import threading
from pathlib import Path

import pytest
import torf
from werkzeug.serving import make_server

from app.api import torrents as torrents_api

PIECE = 16 * 1024  # torf's smallest piece size: small files still span several pieces


@pytest.fixture
def app(make_app):
    """The app with the torrents blueprint (registered here until app/api registers it)."""
    application = make_app()
    if "torrents" not in application.blueprints:
        application.register_blueprint(torrents_api.bp)
    return application


@pytest.fixture
def server_url(app):
    """The app served over real HTTP from a thread, for the scanner CLI; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def write_files(root: Path, layout: dict[str, int | bytes], seed: int = 1) -> Path:
    """Write files under root: an int is that many seeded random bytes, bytes are written as is."""
    rng = random.Random(seed)
    for relative, content in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else rng.randbytes(content)
        path.write_bytes(data)
    return root


def make_torrent(path: Path, *, empty_files: tuple[str, ...] = (), private: bool = True) -> bytes:
    """A .torrent over a real file or directory, hashed by torf.

    Whether torf lists empty files depends on the working directory (its
    filter checks a relative path), so `empty_files` are made sure of here: a
    zero-length file changes no piece.
    """
    torrent = torf.Torrent(path=path, private=private, piece_size=PIECE)
    torrent.generate()
    files = torrent.metainfo["info"].get("files", [])
    for name in empty_files:
        if name.split("/") not in [f["path"] for f in files]:
            files.append({"length": 0, "path": name.split("/")})
    return bytes(torrent.dump())


def info_hash_of(data: bytes) -> str:
    return str(torf.Torrent.read_stream(io.BytesIO(data)).infohash)


def file_list(files: list[tuple[str, int]]) -> str:
    """Gazelle's fileList: HTML-escaped NAME{{{SIZE}}} joined by |||."""
    return "|||".join(f"{html.escape(name)}{{{{{{{size}}}}}}}" for name, size in files)


def gazelle(
    torrent_id: int,
    files: list[tuple[str, int]],
    *,
    top: str = "",
    info_hash: str | None = None,
    name: str = "Album",
    artists: tuple[str, ...] = ("Artist",),
    year: int = 1999,
    group_id: int = 100,
) -> dict:
    """A Gazelle action=torrent response object (group + torrent), names HTML-escaped."""
    return {
        "group": {
            "id": group_id,
            "name": html.escape(name),
            "year": year,
            "recordLabel": "Label",
            "catalogueNumber": "CAT-1",
            "releaseType": 1,
            "categoryName": "Music",
            "musicInfo": {"artists": [{"id": 1, "name": html.escape(a)} for a in artists]},
        },
        "torrent": {
            "id": torrent_id,
            "infoHash": (info_hash or "").upper(),
            "media": "CD",
            "format": "FLAC",
            "encoding": "Lossless",
            "remastered": False,
            "hasLog": True,
            "logScore": 100,
            "hasCue": True,
            "scene": False,
            "fileCount": len(files),
            "size": sum(size for _, size in files),
            "seeders": 5,
            "fileList": file_list(files),
            "filePath": html.escape(top),
        },
    }


def sizes_of(root: Path) -> list[tuple[str, int]]:
    """Every file under a directory as (relative posix path, size), sorted."""
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file()
    )


def listing_of(root: Path, **extra) -> dict:
    """The ingest listing the scanner sends for a directory."""
    files = [{"path": path, "size": size} for path, size in sizes_of(root)]
    return {"path": str(root), "files": files, **extra}


def upload_file(client, headers, data: bytes, *, site=None, torrent_id=None, gazelle_json=None):
    form: dict = {"torrent": (io.BytesIO(data), "x.torrent")}
    if site is not None:
        form["site"] = site
    if torrent_id is not None:
        form["torrentId"] = str(torrent_id)
    if gazelle_json is not None:
        form["gazelle"] = gazelle_json
    return client.post(
        "/api/torrents", data=form, headers=headers, content_type="multipart/form-data"
    )


def upload_gazelle(client, headers, site, response_object):
    return client.post(
        "/api/torrents", json={"site": site, "gazelle": response_object}, headers=headers
    )
