"""The torrent aggregate: what an upload carries, the decisions it leads to, the projectors.

The projectors (`apply_torrent_event`, `apply_torrent_file_event`) are
registered in app/projectors.py.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from app.errors import (
    InfoHashMismatchError,
    InfoHashUnknownError,
    InvalidSiteError,
    TorrentIdMismatchError,
)
from app.queues import downloads
from app.queues.downloads import TorrentRef
from app.registry.keys import (
    FROM_GAZELLE,
    FROM_TORRENT,
    LOCATED,
    REGISTERED,
    UNAVAILABLE,
    normalize_dir,
    parse_site,
    parse_torrent_id,
    title_tokens,
)
from app.store.events import Decision, Doc
from metainfo.gazelle import GazelleTorrent
from metainfo.names import normalize_path
from metainfo.torrent import ParsedTorrent

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


# ---------------------------------------------------------------- the stored .torrent


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


def task_decision(info_hash: str, unavailable: bool) -> Decision:
    """Link a download task to its torrent, or cancel it when the torrent is unavailable."""
    return (
        downloads.cancel_decision(info_hash) if unavailable else downloads.link_decision(info_hash)
    )


def unavailable_decision(reason: str | None) -> Decision:
    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        if state is None or state.get("unavailable"):
            return None
        return "marked_unavailable", {"reason": reason}

    return decide
