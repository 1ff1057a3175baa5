"""A Gazelle `action=torrent` response, reduced to what the registry keeps."""

from __future__ import annotations

import dataclasses
import html
import re
from typing import Any

from metainfo.errors import GazelleError
from metainfo.names import parse_info_hash, parse_torrent_id
from metainfo.torrent import MAX_FILES, TorrentFileEntry

MAX_TEXT_CHARS = 1000


@dataclasses.dataclass(frozen=True)
class GazelleTorrent:
    """The parts of a Gazelle `action=torrent` response the registry keeps."""

    torrent_id: int
    info_hash: str | None
    name: str
    single_file: bool
    files: tuple[TorrentFileEntry, ...]
    group: dict[str, Any]
    release: dict[str, Any]


_FILE_ENTRY = re.compile(r"^(.*)\{\{\{(\d+)\}\}\}$", re.DOTALL)
GROUP_FIELDS: tuple[str, ...] = ("id", "name", "year", "recordLabel", "catalogueNumber")
GROUP_FIELDS += ("releaseType", "categoryName")
RELEASE_FIELDS: tuple[str, ...] = ("media", "format", "encoding", "remastered", "remasterYear")
RELEASE_FIELDS += ("remasterTitle", "remasterRecordLabel", "remasterCatalogueNumber", "scene")
RELEASE_FIELDS += ("hasLog", "hasCue", "logScore", "fileCount", "size")


def parse_file_list(text: str) -> tuple[TorrentFileEntry, ...]:
    """Gazelle's fileList: `NAME{{{SIZE}}}` entries joined by `|||`, names HTML-escaped."""
    files = []
    for entry in text.split("|||"):
        found = _FILE_ENTRY.match(entry)
        if not found or not found.group(1):
            raise GazelleError(
                f"torrent.fileList has an entry that is not NAME{{{{{{SIZE}}}}}}: {entry[:80]!r}."
            )
        files.append(TorrentFileEntry(html.unescape(found.group(1)), int(found.group(2))))
    if len(files) > MAX_FILES:
        raise GazelleError(f"torrent.fileList lists more than {MAX_FILES} files.")
    return tuple(files)


def _scalar(value: Any) -> Any:
    """A metadata value as kept: text unescaped and cut, numbers and booleans as they are."""
    if isinstance(value, str):
        return html.unescape(value)[:MAX_TEXT_CHARS]
    return value if isinstance(value, int | float | bool) or value is None else None


def _artists(group: dict[str, Any]) -> list[str]:
    music = group.get("musicInfo")
    names = []
    for role in ("artists", "with"):
        entries = music.get(role) if isinstance(music, dict) else None
        for artist in entries if isinstance(entries, list) else []:
            name = artist.get("name") if isinstance(artist, dict) else None
            if isinstance(name, str) and name.strip():
                names.append(html.unescape(name.strip())[:MAX_TEXT_CHARS])
    return names


def parse_gazelle(raw: Any) -> GazelleTorrent:
    """Check and reduce a Gazelle response object (or its success envelope)."""
    if isinstance(raw, dict) and isinstance(raw.get("response"), dict):
        raw = raw["response"]  # the whole `{"status": "success", "response": …}` envelope
    if not isinstance(raw, dict) or not isinstance(raw.get("torrent"), dict):
        raise GazelleError("gazelle must be an action=torrent response: group and torrent.")
    group: dict[str, Any] = raw["group"] if isinstance(raw.get("group"), dict) else {}
    torrent = raw["torrent"]
    torrent_id = parse_torrent_id(torrent.get("id"), field="gazelle.torrent.id")
    if not isinstance(torrent.get("fileList"), str) or not torrent["fileList"]:
        raise GazelleError("torrent.fileList is missing or empty.")
    files = parse_file_list(torrent["fileList"])
    top = html.unescape(torrent.get("filePath") or "").strip("/")
    if not top and len(files) != 1:
        raise GazelleError("torrent.filePath is empty, but fileList has several files.")
    raw_hash = torrent.get("infoHash")
    return GazelleTorrent(
        torrent_id=torrent_id,
        info_hash=parse_info_hash(raw_hash) if raw_hash else None,
        name=top or files[0].path,
        single_file=not top,
        files=files,
        group={k: _scalar(group[k]) for k in GROUP_FIELDS if k in group}
        | {"artists": _artists(group)},
        release={k: _scalar(torrent[k]) for k in RELEASE_FIELDS if k in torrent},
    )
