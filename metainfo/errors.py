"""What metainfo raises: ValueErrors that say what is wrong, with no HTTP meaning."""

from __future__ import annotations

from typing import Any


class MetainfoError(ValueError):
    """Input that is not what a .torrent file or a Gazelle response should be."""


class TorrentFileError(MetainfoError):
    """A .torrent file that cannot be read."""


class GazelleError(MetainfoError):
    """A Gazelle `action=torrent` response that is not one."""


class TorrentIdError(MetainfoError):
    """A site's torrent id that is not a positive whole number; `field` names where it was."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.field = field


class InfoHashError(MetainfoError):
    """An info hash that is not 40 hexadecimal digits; `info_hash` is what was given."""

    def __init__(self, reason: str, info_hash: Any) -> None:
        super().__init__(reason)
        self.info_hash = info_hash
