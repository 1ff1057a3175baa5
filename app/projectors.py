"""Every projector, registered explicitly: which function folds the changes of which aggregate.

One table instead of registration by import side effect: a process that
replays or writes events (the app, the CLI, the scheduler, a benchmark, the
tests) calls register_projectors() once at start-up, and then rebuild,
catch-up and phantom repair know every aggregate type whatever else that
process happened to import. Registering again changes nothing.
"""

from __future__ import annotations

from app import sources, stream
from app.accounts import auth, invites
from app.queues import albums, archive, downloads, workers
from app.registry import aggregate as torrents
from app.store.events import Projector, register_projector
from app.tracker import accounts as tracker_accounts

PROJECTORS: dict[str, Projector] = {
    "album": albums.apply_album_event,
    "dltask": downloads.apply_task_event,
    "urltask": archive.apply_url_task_event,
    "worker": workers.apply_worker_event,
    "torrent": torrents.apply_torrent_event,
    "torrentfile": torrents.apply_torrent_file_event,
    "user": auth.apply_user_event,
    "token": auth.apply_token_event,
    "invite": invites.apply_invite_event,
    tracker_accounts.TRACKED: tracker_accounts.apply_tracked_event,
    tracker_accounts.TRACKER_USER: tracker_accounts.apply_tracker_user_event,
    tracker_accounts.WHITELIST: tracker_accounts.apply_whitelist_event,
    **sources.PROJECTORS,
    **stream.PROJECTORS,
}


def register_projectors() -> None:
    """Register every context's projector with the event store (idempotent)."""
    for aggregate_type, func in PROJECTORS.items():
        register_projector(aggregate_type, func)
