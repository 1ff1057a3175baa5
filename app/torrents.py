"""The torrent registry: what workers learned about torrents, merged into one aggregate each.

A torrent is `torrent:<info hash, lower-case hex>`. Workers upload a site's
Gazelle `action=torrent` response (group + torrent) and/or the `.torrent` file
itself; every upload of the same torrent (same info hash, or the same site and
torrent id) merges into the one aggregate, and an upload that teaches nothing
new records nothing. The `.torrent` is kept apart, as an immutable
content-addressed document `torrentfile:<info hash>`: its piece hashes are
only needed to verify data, and they would make every view read heavy.

Keys that views emit are computed here, in Python, and stored in the
projection (`files[].key`, `match_dir`, `search_tokens`), so that matching
never depends on JavaScript's idea of case folding, and every server sees
the same keys. They are only ever looked up exactly (never ranged), because
the bundled server collates by code point and CouchDB by ICU.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import torf

from app import downloads
from app.couch import Database
from app.downloads import TorrentRef
from app.errors import (  # noqa: F401  (re-exported: callers use torrents.<Error>)
    InfoHashMismatchError,
    InfoHashUnknownError,
    InvalidGazelleError,
    InvalidInfoHashError,
    InvalidListingError,
    InvalidQueryError,
    InvalidSiteError,
    InvalidTorrentFileError,
    InvalidTorrentIdError,
    SiteTorrentConflictError,
    TorrentFileNotFoundError,
    TorrentIdMismatchError,
    TorrentNotFoundError,
)
from app.events import Decision, Doc, Outcome, check_none_lost, commit, projector
from app.ids import MAX_SAFE_INT, normalize_key
from app.tracker import accounts as tracker_accounts
from app.web import whole_number

# ---------------------------------------------------------------- keys

REGISTERED, LOCATED, UNAVAILABLE = "registered", "located", "unavailable"
FROM_TORRENT, FROM_GAZELLE = "torrent", "gazelle"
MAX_TORRENT_FILE_BYTES = 10_000_000  # torf's own limit: nothing real comes near it
MAX_FILES = 100_000
MAX_TEXT_CHARS = 1000
MAX_TOKENS = 64
MAX_TOKEN_CHARS = 40
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_TOKEN = re.compile(r"[^\W_]+")


def torrent_doc_id(info_hash: str) -> str:
    return f"torrent:{info_hash}"


def torrent_file_doc_id(info_hash: str) -> str:
    return f"torrentfile:{info_hash}"


def check_info_hash(raw: Any) -> str:
    """The info hash as 40 lower-case hex digits; raise InvalidInfoHashError otherwise."""
    if not isinstance(raw, str) or not _HEX40.match(raw.strip()):
        raise InvalidInfoHashError(
            f"An info hash is 40 hexadecimal digits, got {str(raw)[:60]!r}.", info_hash=raw
        )
    return raw.strip().lower()


def normalize_path(path: str) -> str:
    """The matching key of a relative file path: NFC, case-folded, no empty or '.' parts.

    Case-folded because a copy on a case-insensitive file system (or a site
    that changed case) is the same file; sizes keep the match exact.
    """
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())
    return "/".join(part for part in text.split("/") if part not in ("", "."))


def normalize_dir(name: str) -> str:
    """The matching key of a top directory (or a single file's name): see ids.normalize_key."""
    return normalize_key(name.strip("/"))


def title_tokens(*texts: str | None) -> list[str]:
    """Search tokens: case-folded, accents stripped (Björk -> bjork), split on non-letters."""
    tokens: set[str] = set()
    for text in texts:
        if not text:
            continue
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
        tokens.update(t[:MAX_TOKEN_CHARS] for t in _TOKEN.findall(plain))
    return sorted(tokens)[:MAX_TOKENS]


# ---------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class TorrentFileEntry:
    """One file of a torrent: its path relative to the torrent's root, and its size.

    A BEP 47 padding file (`pad`) is never on disk: it is skipped by matching
    and read as zeros by verification.
    """

    path: str
    size: int
    pad: bool = False

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "size": self.size}
        if self.pad:
            entry["pad"] = True
        return entry


@dataclasses.dataclass(frozen=True)
class ParsedTorrent:
    """What a .torrent file says: identity, layout and piece hashes."""

    info_hash: str
    name: str
    single_file: bool
    files: tuple[TorrentFileEntry, ...]
    piece_length: int
    pieces: bytes
    private: bool | None
    stored_bytes: bytes  # the file reduced to its info dictionary (see parse_torrent_file)

    @property
    def piece_count(self) -> int:
        return len(self.pieces) // 20


def _value_end(data: bytes, start: int) -> int:
    """Where the bencoded value starting at `start` ends (iterative: no recursion limit)."""
    depth, i = 0, start
    while True:
        c = data[i]
        if c in b"ld":
            depth, i = depth + 1, i + 1
        elif c == ord("e") and depth:
            depth, i = depth - 1, i + 1
        elif c == ord("i"):
            i = data.index(b"e", i) + 1
        elif 48 <= c <= 57:
            colon = data.index(b":", i)
            i = colon + 1 + int(data[i:colon])
        else:
            raise ValueError(f"unexpected byte at {i}")
        if depth == 0:
            return i


def raw_info_dict(data: bytes) -> bytes:
    """The exact bytes of the top-level `info` value: its SHA-1 is the info hash.

    Re-encoding a decoded dictionary is not enough: keys out of order or
    strings that are not UTF-8 would change the bytes, and so the hash.
    """
    if data[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    i = 1
    while data[i : i + 1] != b"e":
        key_end = _value_end(data, i)
        colon = data.index(b":", i)
        key = data[colon + 1 : key_end]
        value_end = _value_end(data, key_end)
        if key == b"info":
            return data[key_end:value_end]
        i = value_end
    raise ValueError("no info dictionary")


def parse_torrent_file(data: bytes) -> ParsedTorrent:
    """Read a .torrent with torf; raise InvalidTorrentFileError saying what is wrong.

    What is stored is the file reduced to `{"info": …}` with the info bytes
    untouched: the announce URLs of a site's .torrent carry the downloader's
    passkey, which must not replicate to other sites.
    """
    if not data:
        raise InvalidTorrentFileError("The .torrent file is empty.")
    if len(data) > MAX_TORRENT_FILE_BYTES:
        raise InvalidTorrentFileError(f"A .torrent file is at most {MAX_TORRENT_FILE_BYTES} bytes.")
    try:
        torrent = torf.Torrent.read_stream(data, validate=True)
        info_bytes = raw_info_dict(data)
    except (torf.TorfError, ValueError, IndexError) as exc:
        raise InvalidTorrentFileError(f"The .torrent file cannot be read: {exc}") from None
    info: dict[str, Any] = dict(torrent.metainfo["info"])
    single = "length" in info
    files = _torrent_files(info, single)
    if not files or len(files) > MAX_FILES:
        raise InvalidTorrentFileError(f"A torrent lists 1 to {MAX_FILES} files.")
    return ParsedTorrent(
        info_hash=hashlib.sha1(info_bytes).hexdigest(),
        name=str(info["name"]),
        single_file=single,
        files=files,
        piece_length=int(info["piece length"]),
        pieces=bytes(info["pieces"]),
        private=None if torrent.private is None else bool(torrent.private),
        stored_bytes=b"d4:info" + info_bytes + b"e",
    )


def _torrent_files(info: dict[str, Any], single: bool) -> tuple[TorrentFileEntry, ...]:
    if single:
        return (TorrentFileEntry(str(info["name"]), int(info["length"])),)
    return tuple(
        TorrentFileEntry(
            "/".join(str(part) for part in entry["path"]),
            int(entry["length"]),
            pad="p" in str(entry.get("attr", "")),
        )
        for entry in info["files"]
    )


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
            raise InvalidGazelleError(
                f"torrent.fileList has an entry that is not NAME{{{{{{SIZE}}}}}}: {entry[:80]!r}."
            )
        files.append(TorrentFileEntry(html.unescape(found.group(1)), int(found.group(2))))
    if len(files) > MAX_FILES:
        raise InvalidGazelleError(f"torrent.fileList lists more than {MAX_FILES} files.")
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
        raise InvalidGazelleError("gazelle must be an action=torrent response: group and torrent.")
    group: dict[str, Any] = raw["group"] if isinstance(raw.get("group"), dict) else {}
    torrent = raw["torrent"]
    torrent_id = parse_torrent_id(torrent.get("id"), field="gazelle.torrent.id")
    if not isinstance(torrent.get("fileList"), str) or not torrent["fileList"]:
        raise InvalidGazelleError("torrent.fileList is missing or empty.")
    files = parse_file_list(torrent["fileList"])
    top = html.unescape(torrent.get("filePath") or "").strip("/")
    if not top and len(files) != 1:
        raise InvalidGazelleError("torrent.filePath is empty, but fileList has several files.")
    raw_hash = torrent.get("infoHash")
    return GazelleTorrent(
        torrent_id=torrent_id,
        info_hash=check_info_hash(raw_hash) if raw_hash else None,
        name=top or files[0].path,
        single_file=not top,
        files=files,
        group={k: _scalar(group[k]) for k in GROUP_FIELDS if k in group}
        | {"artists": _artists(group)},
        release={k: _scalar(torrent[k]) for k in RELEASE_FIELDS if k in torrent},
    )


def parse_torrent_id(raw: Any, *, field: str = "torrentId") -> int:
    """A site's torrent id: a positive whole number (JSON number or digits)."""
    value = whole_number(raw.strip()) if isinstance(raw, str) else raw
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidTorrentIdError(f"{field} must be a positive whole number.", field=field)
    if value > MAX_SAFE_INT:
        raise InvalidTorrentIdError(f"{field} is too large.", field=field)
    return value


def parse_site(raw: Any) -> str:
    """The hostname of a site given as a URL or a host; raise InvalidSiteError otherwise."""
    host = downloads.site_host(raw) if isinstance(raw, str) else None
    if host is None:
        raise InvalidSiteError("site must be the site's URL or hostname.", field="site")
    return host


# ---------------------------------------------------------------- uploads


@dataclasses.dataclass(frozen=True)
class Upload:
    """One checked upload: the site and torrent id it came from, and what it carried."""

    ref: TorrentRef | None
    torrent: ParsedTorrent | None = None
    gazelle: GazelleTorrent | None = None

    @property
    def info_hash(self) -> str:
        if self.torrent is not None:
            return self.torrent.info_hash
        if self.gazelle is not None and self.gazelle.info_hash:
            return self.gazelle.info_hash
        raise InfoHashUnknownError(
            "The Gazelle data has no infoHash and no .torrent came with it: upload the "
            ".torrent file (multipart field 'torrent') so the torrent can be identified."
        )


def make_upload(
    site: Any, torrent_id: Any, torrent: ParsedTorrent | None, gazelle: GazelleTorrent | None
) -> Upload:
    """Check that the parts of one upload agree with each other; return it.

    The torrent id comes from the form or from the Gazelle data; both, when
    given, must agree, as must the info hashes of the .torrent and the Gazelle data.
    """
    if torrent and gazelle and gazelle.info_hash and gazelle.info_hash != torrent.info_hash:
        raise InfoHashMismatchError(
            "The Gazelle infoHash is not the info hash of the .torrent file.",
            torrent_file=torrent.info_hash,
            gazelle=gazelle.info_hash,
        )
    ids = {parse_torrent_id(torrent_id)} if torrent_id not in (None, "") else set()
    if gazelle is not None:
        ids.add(gazelle.torrent_id)
    if len(ids) > 1:
        raise TorrentIdMismatchError("torrentId and gazelle torrent.id differ.", ids=sorted(ids))
    if site in (None, "") and not ids:
        upload = Upload(None, torrent, gazelle)
    elif site in (None, "") or not ids:
        raise InvalidSiteError("site and torrentId come together (or neither).", field="site")
    else:
        upload = Upload(TorrentRef(parse_site(site), ids.pop()), torrent, gazelle)
    upload.info_hash  # noqa: B018  (raises InfoHashUnknownError when nothing names the torrent)
    return upload


def _contribution(upload: Upload) -> dict[str, Any]:
    """What an upload can teach the aggregate, in event-data form."""
    data: dict[str, Any] = {}
    source = upload.torrent or upload.gazelle
    if source is not None:
        data["files"] = {
            "from": FROM_TORRENT if upload.torrent else FROM_GAZELLE,
            "name": source.name,
            "single_file": source.single_file,
            "list": [f.as_dict() for f in source.files],
        }
    if upload.torrent is not None:
        data["torrent_file"] = {
            "piece_length": upload.torrent.piece_length,
            "piece_count": upload.torrent.piece_count,
            "private": upload.torrent.private,
        }
    if upload.ref is not None:
        site: dict[str, Any] = {"site": upload.ref.host, "torrentId": upload.ref.torrent_id}
        if upload.gazelle is not None:
            site.update(group=upload.gazelle.group, release=upload.gazelle.release)
        data["site"] = site
    return data


def _files_news(state: Doc, files: dict[str, Any]) -> bool:
    """Whether an upload's file list replaces the stored one.

    The .torrent is the authority: it replaces a list from Gazelle and is
    never replaced. Between two Gazelle lists the first stays.
    """
    stored_from = state.get("files_from")
    if stored_from == FROM_TORRENT or (
        stored_from == FROM_GAZELLE and files["from"] != FROM_TORRENT
    ):
        return False
    stored = [{k: v for k, v in f.items() if k != "key"} for f in state.get("files") or []]
    return (stored, state.get("name"), stored_from) != (
        files["list"],
        files["name"],
        files["from"],
    )


def _site_news(state: Doc, site: dict[str, Any]) -> bool:
    """Whether a site entry is new, or brings Gazelle metadata that differs from the stored."""
    for entry in state.get("sites") or []:
        if (entry["site"], entry["torrentId"]) == (site["site"], site["torrentId"]):
            return "group" in site and (entry.get("group"), entry.get("release")) != (
                site["group"],
                site["release"],
            )
    return True


def merge_decision(upload: Upload) -> Decision:
    """Record what this upload adds: "registered" first, "updated" later, else nothing."""
    contribution = _contribution(upload)

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None:
            return "registered", contribution
        patch = {}
        if "files" in contribution and _files_news(state, contribution["files"]):
            patch["files"] = contribution["files"]
        if "torrent_file" in contribution and not state.get("has_torrent_file"):
            patch["torrent_file"] = contribution["torrent_file"]
        if "site" in contribution and _site_news(state, contribution["site"]):
            patch["site"] = contribution["site"]
        return ("updated", patch) if patch else None

    return decide


# ---------------------------------------------------------------- projection


@projector("torrent")
def apply_torrent_event(state: Doc, event: Doc) -> None:
    """Project one torrent event; keys the views emit are derived here."""
    if "info_hash" not in state:
        _start(state, event)
    name, data = event["name"], event["data"]
    if name in ("registered", "updated"):
        _apply_contribution(state, data)
    elif name == "located":
        state["location"] = {**data, "located_at": event["at"]}
    elif name == "verification_failed":
        failure = {**data, "at": event["at"]}
        state["last_failed_verification"] = failure
        if (state.get("location") or {}).get("path") == data["path"]:
            state["location"]["verified"] = {"status": "failed", "piece": data["piece"]}
            state["location"]["verified_at"] = event["at"]
    elif name == "marked_unavailable":
        state["unavailable"] = {"reason": data.get("reason"), "at": event["at"]}
    state["state"] = (
        UNAVAILABLE if state["unavailable"] else LOCATED if state["location"] else REGISTERED
    )


def _start(state: Doc, event: Doc) -> None:
    state.update(
        info_hash=event["aggregate"].split(":", 1)[1],
        name=None,
        title=None,
        single_file=None,
        files=[],
        files_from=None,
        size=0,
        file_count=0,
        match_dir=None,
        piece_length=None,
        piece_count=None,
        private=None,
        has_torrent_file=False,
        sites=[],
        search_tokens=[],
        task_ids=[],
        location=None,
        unavailable=None,
        registered_at=event["at"],
    )


def _apply_contribution(state: Doc, data: dict[str, Any]) -> None:
    if "files" in data:
        files = data["files"]
        state.update(
            name=files["name"],
            single_file=files["single_file"],
            files=[dict(f, key=normalize_path(f["path"])) for f in files["list"]],
            files_from=files["from"],
            size=sum(f["size"] for f in files["list"]),
            file_count=len(files["list"]),
            match_dir=normalize_dir(files["name"]),
        )
    if "torrent_file" in data:
        state.update(data["torrent_file"], has_torrent_file=True)
    if "site" in data:
        site = data["site"]
        key = (site["site"], site["torrentId"])
        state["sites"] = [s for s in state["sites"] if (s["site"], s["torrentId"]) != key] + [site]
        state["task_ids"] = [
            downloads.task_doc_id(s["site"], s["torrentId"]) for s in state["sites"]
        ]
    state["title"] = _title(state)
    state["search_tokens"] = title_tokens(state["title"], state["name"])


def _title(state: Doc) -> str | None:
    """ "Artist & Artist - Album (Year)" from the first site's Gazelle group, else the name."""
    for site in state["sites"]:
        group = site.get("group") or {}
        if group.get("name"):
            artists = " & ".join(group.get("artists") or [])
            year = f" ({group['year']})" if group.get("year") else ""
            return f"{artists} - {group['name']}{year}" if artists else f"{group['name']}{year}"
    name = state.get("name")
    return str(name) if name is not None else None


# ---------------------------------------------------------------- registering


@projector("torrentfile")
def apply_torrent_file_event(state: Doc, event: Doc) -> None:
    """A stored .torrent: written once, never changed (its id is its content's hash)."""
    if event["name"] == "stored":
        state.update(event["data"])


def torrent_file_decision(parsed: ParsedTorrent) -> Decision:
    """Keep the .torrent (reduced to its info dictionary) once.

    It is a fact like any other: the log holds it, so a rebuilt read model
    and every other site have it too. Content-addressed: a second upload of
    the same info hash is the same content and records nothing.
    """
    data = {
        "info_hash": parsed.info_hash,
        "size": len(parsed.stored_bytes),
        "data": base64.b64encode(parsed.stored_bytes).decode("ascii"),
    }

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return None if state is not None else ("stored", data)

    return decide


def read_torrent_file(db: Database, info_hash: str) -> bytes:
    """The stored .torrent of a torrent; raise TorrentFileNotFoundError when none is."""
    doc = db.get_or_none(torrent_file_doc_id(info_hash))
    if doc is None:
        raise TorrentFileNotFoundError(
            f"No .torrent file is stored for {info_hash}.", info_hash=info_hash
        )
    try:
        return base64.b64decode(doc["data"], validate=True)
    except (KeyError, binascii.Error):
        raise TorrentFileNotFoundError(f"The stored .torrent of {info_hash} is damaged.") from None


def check_site_free(db: Database, ref: TorrentRef, info_hash: str) -> None:
    """Refuse a site torrent id that the registry already knows under another info hash."""
    rows = db.view("torrents", "by_site_torrent", key=[ref.host, ref.torrent_id])
    others = [row["id"].split(":", 1)[1] for row in rows if row["id"] != torrent_doc_id(info_hash)]
    if others:
        raise SiteTorrentConflictError(
            f"{ref.host} torrent {ref.torrent_id} is registered with another info hash.",
            site=ref.host,
            torrentId=ref.torrent_id,
            info_hash=others[0],
        )


def _check_task_link(task: Doc | None, ref: TorrentRef, info_hash: str) -> None:
    linked = (task or {}).get("info_hash")
    if linked and linked != info_hash:
        raise SiteTorrentConflictError(
            f"The download task of {ref.host} torrent {ref.torrent_id} is linked elsewhere.",
            site=ref.host,
            torrentId=ref.torrent_id,
            info_hash=linked,
        )


def task_decision(info_hash: str, unavailable: bool) -> Decision:
    """Link a download task to its torrent, or cancel it when the torrent is unavailable."""
    return (
        downloads.cancel_decision(info_hash) if unavailable else downloads.link_decision(info_hash)
    )


def register_upload(db: Database, upload: Upload, *, actor: str, now: datetime) -> dict[str, Any]:
    """Merge one upload into its torrent and link the download task; report what changed.

    Raises SiteTorrentConflictError (nothing written) when the site's torrent
    id belongs to another info hash already.
    """
    info_hash = upload.info_hash
    doc_id = torrent_doc_id(info_hash)
    task_id = downloads.task_doc_id(upload.ref.host, upload.ref.torrent_id) if upload.ref else None
    if upload.ref is not None:
        check_site_free(db, upload.ref, info_hash)
    states = db.get_many([doc_id] + ([task_id] if task_id else []))
    if upload.ref is not None and task_id is not None:
        _check_task_link(states.get(task_id), upload.ref, info_hash)
    unavailable = bool((states.get(doc_id) or {}).get("unavailable"))
    decisions: list[tuple[str, Decision]] = [(doc_id, merge_decision(upload))]
    if task_id is not None:
        decisions.append((task_id, task_decision(info_hash, unavailable)))
    decisions.append(tracker_accounts.registry_decision(info_hash, _upload_name(upload)))
    if upload.torrent is not None:
        decisions.append((torrent_file_doc_id(info_hash), torrent_file_decision(upload.torrent)))
    outcomes = commit(db, decisions, actor=actor, now=now, states=states)
    check_none_lost(outcomes)
    if outcomes[0].recorded:
        refresh_matching_index(db)
    stored = upload.torrent is not None and outcomes[-1].recorded
    tracked = 1 + (upload.torrent is not None)  # the tracker's and the file's outcomes
    return _upload_report(upload, outcomes[:-tracked], stored)


MATCHING_VIEWS = ("by_file", "by_top_dir")


def refresh_matching_index(db: Database) -> None:
    """Bring the matching views up to date before a registration is answered.

    The matcher reads them stale (app/ingest_match.py): every recorded match
    rewrites a torrent, and re-indexing on every read would cost more than
    the look-ups. Refreshing here, where torrents are added or their files
    change, means a stale read still sees every registered torrent. Both views
    are read: pouchdb-server keeps an index per view, Apache CouchDB one per
    design document (`matching` holds only these two, which must be fresh together).
    """
    for view in MATCHING_VIEWS:
        db.view("matching", view, limit=0)


def _upload_name(upload: Upload) -> str:
    source = upload.torrent or upload.gazelle
    return source.name if source is not None else upload.info_hash


def _upload_report(upload: Upload, outcomes: list[Outcome], stored: bool) -> dict[str, Any]:
    torrent = outcomes[0]
    assert torrent.state is not None
    status = "unchanged"
    if torrent.event is not None:
        status = "registered" if torrent.event["name"] == "registered" else "updated"
    report: dict[str, Any] = {"info_hash": torrent.state["info_hash"], "status": status}
    if upload.torrent is not None:
        report["torrent_file"] = "stored" if stored else "already_stored"
    report["tasks"] = [_task_status(o, upload.ref) for o in outcomes[1:] if upload.ref]
    report["torrent"] = public_torrent(torrent.state)
    return report


def _task_status(outcome: Outcome, ref: TorrentRef) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": ref.host, "torrentId": ref.torrent_id}
    if outcome.state is None:
        entry["status"] = "no_task"
    elif outcome.event is not None:
        entry["status"] = "cancelled" if outcome.event["name"] == "cancelled" else "linked"
    else:
        entry["status"] = "cancelled" if outcome.state.get("state") == "cancelled" else "linked"
    return entry


def register_uploads(
    db: Database, uploads: Iterable[Upload], *, actor: str, now: datetime, batch: int = 1000
) -> int:
    """Merge many uploads in batches (imports, benchmarks); return how many events were written.

    The bulk equivalent of register_upload: the same decisions, one commit per
    batch. It skips the per-upload view check for site conflicts (a linked
    download task still refuses another info hash, silently), and it keeps no
    .torrent files: give it Gazelle data with info hashes.
    """
    written = 0
    pending: dict[str, Upload] = {}
    for upload in uploads:
        pending[upload.info_hash] = upload
        if len(pending) >= batch:
            written += _register_batch(db, list(pending.values()), actor, now)
            pending = {}
    if pending:
        written += _register_batch(db, list(pending.values()), actor, now)
    return written


def _register_batch(db: Database, uploads: list[Upload], actor: str, now: datetime) -> int:
    decisions: list[tuple[str, Decision]] = []
    for upload in uploads:
        decisions.append((torrent_doc_id(upload.info_hash), merge_decision(upload)))
        decisions.append(tracker_accounts.registry_decision(upload.info_hash, _upload_name(upload)))
        if upload.ref is not None:
            task_id = downloads.task_doc_id(upload.ref.host, upload.ref.torrent_id)
            decisions.append((task_id, downloads.link_decision(upload.info_hash)))
    outcomes = commit(db, decisions, actor=actor, now=now)
    check_none_lost(outcomes)
    if any(o.recorded and o.aggregate.startswith("torrent:") for o in outcomes):
        refresh_matching_index(db)
    return sum(1 for o in outcomes if o.recorded)


# ---------------------------------------------------------------- unavailable


def _unavailable_decision(reason: str | None) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("unavailable"):
            return None
        return "marked_unavailable", {"reason": reason}

    return decide


def mark_unavailable(
    db: Database, info_hash: str, reason: str | None, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Mark a torrent trumped or deleted and cancel its download tasks (never leased again).

    Raises TorrentNotFoundError for an unknown info hash. Again changes nothing.
    """
    doc_id = torrent_doc_id(info_hash)
    torrent = db.get_or_none(doc_id)
    if torrent is None:
        raise TorrentNotFoundError(f"No torrent has info hash {info_hash}.", info_hash=info_hash)
    refs = [TorrentRef(s["site"], s["torrentId"]) for s in torrent["sites"]]
    decisions: list[tuple[str, Decision]] = [(doc_id, _unavailable_decision(reason))]
    cancel = downloads.cancel_decision(info_hash, reason)
    decisions += [(downloads.task_doc_id(r.host, r.torrent_id), cancel) for r in refs]
    outcomes = commit(db, decisions, actor=actor, now=now, states={doc_id: torrent})
    check_none_lost(outcomes)
    state = outcomes[0].state
    assert state is not None
    return {
        "info_hash": info_hash,
        "recorded": outcomes[0].recorded,
        "tasks": [_cancel_status(o, r) for o, r in zip(outcomes[1:], refs, strict=True)],
        "torrent": public_torrent(state),
    }


def _cancel_status(outcome: Outcome, ref: TorrentRef) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": ref.host, "torrentId": ref.torrent_id}
    if outcome.state is None:
        entry["status"] = "no_task"
    elif outcome.recorded:
        entry["status"] = "cancelled"
    else:  # cancelled before, or done: a finished download stays done
        entry["status"] = (
            "already_cancelled"
            if outcome.state.get("state") == "cancelled"
            else outcome.state["state"]
        )
    return entry


def mark_site_torrent_unavailable(
    db: Database, ref: TorrentRef, reason: str | None, *, actor: str, now: datetime
) -> dict[str, Any]:
    """As mark_unavailable, by site and torrent id; a task without a torrent is cancelled too.

    Raises TorrentNotFoundError when neither a torrent nor a download task is known.
    """
    torrent = find_by_site(db, ref)
    if torrent is not None:
        return mark_unavailable(db, torrent["info_hash"], reason, actor=actor, now=now)
    task_id = downloads.task_doc_id(ref.host, ref.torrent_id)
    cancel = downloads.cancel_decision(None, reason)
    [outcome] = commit(db, [(task_id, cancel)], actor=actor, now=now)
    if outcome.state is None:
        raise TorrentNotFoundError(
            f"No torrent and no download task is known for {ref.host} torrent {ref.torrent_id}.",
            site=ref.host,
            torrentId=ref.torrent_id,
        )
    check_none_lost([outcome])
    return {
        "info_hash": None,
        "recorded": outcome.recorded,
        "tasks": [_cancel_status(outcome, ref)],
        "torrent": None,
    }


# ---------------------------------------------------------------- reads


def get_torrent(db: Database, info_hash: str) -> Doc:
    doc = db.get_or_none(torrent_doc_id(info_hash))
    if doc is None:
        raise TorrentNotFoundError(f"No torrent has info hash {info_hash}.", info_hash=info_hash)
    return doc


def find_by_site(db: Database, ref: TorrentRef) -> Doc | None:
    """The torrent registered for a site's torrent id, or None."""
    rows = db.view("torrents", "by_site_torrent", key=[ref.host, ref.torrent_id], include_docs=True)
    docs = [row["doc"] for row in rows if row.get("doc")]
    return docs[0] if docs else None


def public_torrent(doc: Doc) -> dict[str, Any]:
    """A torrent as the API shows it (files and piece hashes left out)."""
    return {
        "info_hash": doc["info_hash"],
        "name": doc["name"],
        "title": doc["title"],
        "state": doc["state"],
        "single_file": doc["single_file"],
        "size": doc["size"],
        "file_count": doc["file_count"],
        "files_from": doc["files_from"],
        "has_torrent_file": doc["has_torrent_file"],
        "piece_length": doc["piece_length"],
        "private": doc["private"],
        "sites": doc["sites"],
        "location": _public_location(doc.get("location")),
        "unavailable": doc["unavailable"],
    }


def _public_location(location: Doc | None) -> dict[str, Any] | None:
    if not location:
        return None
    return {
        "path": location["path"],
        "kind": location["kind"],
        "verified": location.get("verified"),
        "verified_at": location.get("verified_at"),
        "located_at": location["located_at"],
    }


def local_paths(doc: Doc) -> list[str | None]:
    """Where each file of a located torrent lives on disk (None for padding or when not located)."""
    location = doc.get("location")
    files = doc.get("files") or []
    if not location:
        return [None] * len(files)
    relative = location.get("files") or [f["path"] for f in files]
    if location["kind"] == "file":
        base = location["path"].rpartition("/")[0]
    else:
        base = location["path"].rstrip("/")
    pairs = zip(files, relative, strict=True)
    return [None if f.get("pad") else f"{base}/{rel}" for f, rel in pairs]


def reseed_view(doc: Doc) -> dict[str, Any]:
    """The reseed lookup: the torrent, where each file lives, and whether it was verified."""
    files = [
        {"path": f["path"], "size": f["size"], "local_path": path}
        for f, path in zip(doc.get("files") or [], local_paths(doc), strict=True)
    ]
    return {**public_torrent(doc), "files": files}


# ---------------------------------------------------------------- search

SEARCH_TOKEN_CAP = 2000  # a token with more torrents than this is only a filter


def search_torrents(db: Database, query: str, *, limit: int = 50) -> list[Doc]:
    """Torrents whose title tokens include every token of the query (group, artists, year, name).

    Each token is one keyed read of torrents/by_title_token, capped: a token
    too common to narrow anything ("the", "flac") only filters what rarer
    tokens found. Results come in title order.
    """
    tokens = title_tokens(query)
    if not tokens:
        raise InvalidQueryError("q must contain at least one letter or digit.", field="q")
    narrowing: list[set[str]] = []
    for token in tokens:
        rows = db.view("torrents", "by_title_token", key=token, limit=SEARCH_TOKEN_CAP + 1)
        if len(rows) <= SEARCH_TOKEN_CAP:
            narrowing.append({row["id"] for row in rows})
    if not narrowing:  # every token is everywhere: too broad to answer
        raise InvalidQueryError("The query is too broad: add a less common word.", field="q")
    ids = set.intersection(*narrowing)
    docs = [d for d in db.get_many(sorted(ids)).values() if set(tokens) <= set(d["search_tokens"])]
    docs.sort(key=lambda d: (d.get("title") or "", d["info_hash"]))
    return docs[:limit]
