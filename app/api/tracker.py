"""The private tracker's management API (Mika's, for admins) and the members' download.

A site registers torrents, users with passkeys and a client whitelist here,
and reads seeders/leechers/snatches back from `/api/counts`; the tracker
process learns every change through CouchDB (see app.tracker.accounts) and
writes its swarms to the peers database, which the read endpoints show.

A member downloads a `.torrent` with their passkey in its announce URL, as
from a private tracker's RSS link: `GET /api/torrents/<info hash>/download?passkey=…`.
The passkey is the credential there; nothing else is asked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bencode2
from flask import Blueprint, Response, jsonify, request

from app.accounts import people
from app.accounts.auth import ADMIN, current_principal, requires
from app.api.web import checked_body, context, object_schema
from app.config import Settings
from app.errors import MissingFieldError, UnknownPasskeyError
from app.ids import MAX_SAFE_INT
from app.registry import queries
from app.timeutil import iso
from app.tracker import accounts, activity, members, peersdb
from metainfo import torrent as metainfo_torrent

bp = Blueprint("tracker", __name__)

_ID = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT}
_TEXT = {"type": "string", "maxLength": accounts.MAX_NAME_CHARS}


TORRENT_BODY = object_schema(
    {"info_hash": {"type": "string"}, "torrent_id": _ID, "name": _TEXT},
    ["info_hash", "torrent_id", "name"],
)
USER_FIELDS = {"passkey": {"type": "string"}, "can_leech": {"type": "boolean"}, "name": _TEXT}
USER_BODY = object_schema({"user_id": _ID, **USER_FIELDS}, ["user_id", "name"])
USER_PATCH_BODY = object_schema(USER_FIELDS, [])
WHITELIST_BODY = object_schema(
    {"prefix": {"type": "string"}, "client": _TEXT}, ["prefix", "client"]
)


def _who() -> dict[str, Any]:
    ctx = context()
    return {"actor": current_principal().holder, "now": ctx.clock()}


# ---------------------------------------------------------------- torrents


@bp.post("/api/torrent")
@requires(ADMIN)
def register_torrent() -> tuple[Response, int]:
    """Track a torrent: {info_hash, torrent_id, name}. Who: admins. 201, or 409 if tracked."""
    body = checked_body(TORRENT_BODY)
    doc = accounts.register_torrent(
        context().db, body["info_hash"], body["torrent_id"], body["name"], **_who()
    )
    return jsonify(accounts.public_tracked(doc)), 201


@bp.get("/api/torrent/<info_hash>")
@requires(ADMIN)
def get_torrent(info_hash: str) -> Response:
    """A tracked torrent with its live seeders and leechers. Who: admins."""
    ctx = context()
    doc = accounts.get_tracked_torrent(ctx.db, info_hash)
    swarm = peersdb.get_swarm(ctx.peers_db, doc["info_hash"]) or {}
    seeders, leechers = swarm.get("seeders", 0), swarm.get("leechers", 0)
    return jsonify(accounts.public_tracked(doc) | {"seeders": seeders, "leechers": leechers})


@bp.delete("/api/torrent/<info_hash>")
@requires(ADMIN)
def unregister_torrent(info_hash: str) -> Response:
    """Stop tracking a torrent; automatic registration will not bring it back. Who: admins."""
    doc = accounts.unregister_torrent(context().db, info_hash, **_who())
    return jsonify({"info_hash": doc["info_hash"], "registered": False})


@bp.get("/api/torrent/<info_hash>/peers")
@requires(ADMIN)
def torrent_peers(info_hash: str) -> Response:
    """The peers of a tracked torrent's swarm, as last written by the tracker. Who: admins."""
    ctx = context()
    doc = accounts.get_tracked_torrent(ctx.db, info_hash)
    swarm = peersdb.get_swarm(ctx.peers_db, doc["info_hash"]) or {}
    peers = [_public_peer(pid, peer) for pid, peer in sorted((swarm.get("peers") or {}).items())]
    return jsonify(
        {
            "info_hash": doc["info_hash"],
            "seeders": swarm.get("seeders", 0),
            "leechers": swarm.get("leechers", 0),
            "peers": peers,
        }
    )


def _public_peer(peer_id: str, peer: dict[str, Any]) -> dict[str, Any]:
    last_seen = peer.get("last_seen")
    public = {
        "peer_id": peer_id,
        "user_id": peer.get("user_id"),
        "client": peer.get("client"),
        "ip": peer.get("ip"),
        "port": peer.get("port"),
        "seeding": peer.get("left") == 0,
        "left": peer.get("left"),
        "uploaded": peer.get("uploaded"),
        "downloaded": peer.get("downloaded"),
        "last_seen": iso(datetime.fromtimestamp(float(last_seen), UTC)) if last_seen else None,
    }
    if peer.get("ip6"):  # a dual-stack client: its IPv6 address too
        public["ip6"], public["port6"] = peer["ip6"], peer.get("port6")
    return public


@bp.get("/api/counts")
@requires(ADMIN)
def counts() -> Response:
    """Mika's counts: [{info_hash, torrent_id, seeders, leechers, snatches}]. Who: admins."""
    ctx = context()
    live = peersdb.swarm_counts(ctx.peers_db)
    rows = []
    for entry in accounts.list_tracked_torrents(ctx.db):
        seeders, leechers = live.get(entry["info_hash"], (0, 0))
        rows.append(
            {
                "info_hash": entry["info_hash"],
                "torrent_id": entry["torrent_id"],
                "seeders": seeders,
                "leechers": leechers,
                "snatches": entry["snatches"],
            }
        )
    return jsonify(rows)


# ---------------------------------------------------------------- users


@bp.post("/api/user")
@requires(ADMIN)
def register_user() -> tuple[Response, int]:
    """Add a tracker user: {user_id, passkey?, can_leech?, name}. Who: admins.

    Without a passkey one is generated and answered as `passkey`, this once:
    only its hash is stored.
    """
    body = checked_body(USER_BODY)
    doc, passkey = members.register_user(
        context().db,
        body["user_id"],
        name=body["name"],
        can_leech=body.get("can_leech", True),
        passkey=body.get("passkey"),
        **_who(),
    )
    shown = members.public_user(doc)
    if "passkey" not in body:
        shown["passkey"] = passkey
    return jsonify(shown), 201


@bp.get("/api/user/<user_id>")
@requires(ADMIN)
def get_user(user_id: str) -> Response:
    """A tracker user with their totals (never the passkey). Who: admins.

    The totals include the current hour's traffic, which the tracker records
    as a summary only at the end of the hour (app/tracker/activity.py).
    """
    ctx = context()
    doc = activity.current_user(ctx.db, ctx.peers_db, accounts.check_user_id(user_id))
    return jsonify(members.public_user(doc))


@bp.patch("/api/user/<user_id>")
@requires(ADMIN)
def update_user(user_id: str) -> Response:
    """Change a user's name, can_leech or passkey (a new one replaces the old at once)."""
    body = checked_body(USER_PATCH_BODY)
    doc = members.update_user(
        context().db,
        accounts.check_user_id(user_id),
        name=body.get("name"),
        can_leech=body.get("can_leech"),
        passkey=body.get("passkey"),
        **_who(),
    )
    return jsonify(members.public_user(doc))


@bp.delete("/api/user/<user_id>")
@requires(ADMIN)
def delete_user(user_id: str) -> Response:
    """Delete a tracker user: their passkey stops working. Who: admins."""
    doc = members.delete_user(context().db, accounts.check_user_id(user_id), **_who())
    return jsonify({"user_id": doc["user_id"], "active": False})


@bp.get("/api/user/<user_id>/torrents")
@requires(ADMIN)
def user_torrents(user_id: str) -> Response:
    """The swarms a user is in now (seeding or not) and the torrents they completed."""
    ctx = context()
    doc = members.get_tracker_user(ctx.db, accounts.check_user_id(user_id))
    return jsonify(
        {
            "user_id": doc["user_id"],
            "swarms": peersdb.torrents_of_user(ctx.peers_db, doc["user_id"]),
            "snatched": members.list_snatched(ctx.db, doc["user_id"]),
        }
    )


# ---------------------------------------------------------------- whitelist


@bp.post("/api/whitelist")
@requires(ADMIN)
def add_whitelist_entry() -> tuple[Response, int]:
    """Allow a client by peer_id prefix: {prefix, client}. An empty whitelist allows all."""
    body = checked_body(WHITELIST_BODY)
    doc = accounts.add_whitelist_entry(context().db, body["prefix"], body["client"], **_who())
    return jsonify({"prefix": doc["prefix"], "client": doc["client"]}), 201


@bp.delete("/api/whitelist/<prefix>")
@requires(ADMIN)
def remove_whitelist_entry(prefix: str) -> Response:
    doc = accounts.remove_whitelist_entry(context().db, prefix, **_who())
    return jsonify({"prefix": doc["prefix"], "active": False})


@bp.get("/api/whitelist")
@requires(ADMIN)
def list_whitelist() -> Response:
    return jsonify(accounts.list_whitelist(context().db))


# ---------------------------------------------------------------- members' download


def announce_base(settings: Settings) -> str:
    """Where clients reach the tracker: tracker.public_url, else http://host:port.

    tracker.host may list several addresses ("127.0.0.1,::1"): the first is used.
    """
    tracker = settings.tracker
    if tracker.public_url:
        return tracker.public_url.rstrip("/")
    host = tracker.host.split(",")[0].strip()
    return f"http://{f'[{host}]' if ':' in host else host}:{tracker.port}"


def torrent_with_announce(stored: bytes, announce: str) -> bytes:
    """A .torrent of the stored info dictionary, its bytes untouched, with an announce URL.

    The info dictionary is copied byte for byte (re-encoding could reorder
    keys or alter strings, and so change the info hash); `private` stays in it.
    """
    info = metainfo_torrent.raw_info_dict(stored)
    return b"d8:announce" + bencode2.bencode(announce) + b"4:info" + info + b"e"


@bp.get("/api/torrents/<info_hash>/download")
def member_download(info_hash: str) -> Response:
    """A tracked torrent's .torrent with the member's passkey in its announce URL.

    Who: anyone with an active tracker user's passkey (?passkey=…), checked
    first, so that nobody else learns which torrents are tracked; a logged-in
    person needs no ?passkey: their own is used.
    """
    ctx = context()
    passkey = request.args.get("passkey", "") or _own_passkey()
    if members.find_user_by_passkey(ctx.db, passkey) is None:
        raise UnknownPasskeyError("The passkey belongs to no tracker user.")
    doc = accounts.get_tracked_torrent(ctx.db, info_hash)
    stored = queries.read_torrent_file(ctx.db, doc["info_hash"])
    announce = f"{announce_base(ctx.settings)}/announce?passkey={passkey}"
    response = Response(
        torrent_with_announce(stored, announce), mimetype="application/x-bittorrent"
    )
    disposition = f'attachment; filename="{doc["info_hash"]}.torrent"'
    response.headers["Content-Disposition"] = disposition
    response.headers["Cache-Control"] = "private, no-store"  # the passkey is inside
    return response


def _own_passkey() -> str:
    """The caller's own passkey when they are a person who logged in (or basic auth)."""
    principal = context().auth.identify(request)
    person = principal is not None and principal.role in people.PERSON_ROLES
    passkey = people.get_passkey(context().db, principal.name) if person else None
    if not passkey:
        raise MissingFieldError("Give your passkey as ?passkey=…, or log in.", field="passkey")
    return passkey
