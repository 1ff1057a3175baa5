"""The metadata worker: find where each leased album is available on a Gazelle site.

For every album of a lease it looks the artist up (`action=artist`, cached
in CouchDB through the coordinator for 7 days, as the original client did,
so that an inventory sorted by artist costs one request per artist, not per
album), keeps the torrent groups whose title matches the album's, falls back
to one `action=browse` search when that finds nothing, and picks the best
torrent by PREFERENCE. It submits the whole batch with POST /metadata/submit
([] for "not found, try again later"), then uploads each chosen torrent's
`action=torrent` response to the registry (POST /api/torrents).

Preference (the original client's), best first; only FLAC is ever chosen:
  0. FLAC 24-bit lossless from WEB or Vinyl;
  1. FLAC from CD with a 100% log and a cue;
  2. any other FLAC.
Within a tier: more seeders first, then the lower (older) torrent id, so the
choice is deterministic.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from worker.coordinator import MISSING, Coordinator, CoordinatorError
from worker.gazelle import (
    GazelleAuthError,
    GazelleClient,
    GazelleError,
    GazelleFailureError,
)

log = logging.getLogger(__name__)

ARTIST_CACHE_TTL_SECONDS = 7 * 24 * 3600
MAX_TORRENT_ATTEMPTS = 3  # candidates tried when the best one's action=torrent fails
_APOSTROPHES = re.compile(r"['’‘`´]")
_NOT_WORD = re.compile(r"[^\w]+|_")


def normalise_title(text: str) -> str:
    """Compare titles loosely: HTML entities, Unicode forms, case, punctuation, '&' ~ 'and'.

    Gazelle HTML-escapes names ("Rock &amp; Roll") and inventories type
    apostrophes and dashes differently; words and their order must still agree.
    """
    text = unicodedata.normalize("NFKC", html.unescape(text)).casefold()
    text = _APOSTROPHES.sub("", text).replace("&", " and ")
    return " ".join(_NOT_WORD.sub(" ", text).split())


def normalise_artist(text: str) -> str:
    """Like titles, and a leading "the" does not count ("The Beatles" ~ "Beatles")."""
    name = normalise_title(text)
    return name[4:] if name.startswith("the ") else name


def artist_names(sort_artist: str) -> list[str]:
    """Names to look a sort-form artist up by: "Cockburn, Bruce" -> "Bruce Cockburn" first.

    The flipped form is a guess ("Crosby, Stills & Nash" is no sort form), so
    the name as given is tried second.
    """
    name = " ".join(html.unescape(sort_artist).split())
    head, sep, tail = name.rpartition(", ")
    names = [f"{tail} {head}"] if sep and head and tail else []
    return [*names, name] if name else names


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One torrent of a matching group, with what the preference looks at."""

    torrent_id: int
    group_id: int
    group_name: str
    artist: str
    media: str = ""
    format: str = ""
    encoding: str = ""
    has_log: bool = False
    log_score: int = 0
    has_cue: bool = False
    seeders: int = 0


def _candidate(torrent: dict[str, Any], group: dict[str, Any], artist: str) -> Candidate | None:
    torrent_id = torrent.get("torrentId", torrent.get("id"))
    if not isinstance(torrent_id, int) or isinstance(torrent_id, bool):
        return None
    return Candidate(
        torrent_id=torrent_id,
        group_id=int(group.get("groupId") or 0),
        group_name=str(group.get("groupName") or ""),
        artist=artist,
        media=str(torrent.get("media") or ""),
        format=str(torrent.get("format") or ""),
        encoding=str(torrent.get("encoding") or ""),
        has_log=bool(torrent.get("hasLog")),
        log_score=int(torrent.get("logScore") or 0),
        has_cue=bool(torrent.get("hasCue")),
        seeders=int(torrent.get("seeders") or 0),
    )


def candidates_from_artist(response: dict[str, Any]) -> list[Candidate]:
    """Every torrent on an `action=artist` response (groups under "torrentgroup")."""
    artist = str(response.get("name") or "")
    found = []
    for group in response.get("torrentgroup") or []:
        for torrent in group.get("torrent") or []:
            if (candidate := _candidate(torrent, group, artist)) is not None:
                found.append(candidate)
    return found


def candidates_from_browse(response: dict[str, Any]) -> list[Candidate]:
    """Every torrent on an `action=browse` page (music groups carry "torrents")."""
    found = []
    for group in response.get("results") or []:
        for torrent in group.get("torrents") or []:
            candidate = _candidate(torrent, group, str(group.get("artist") or ""))
            if candidate is not None:
                found.append(candidate)
    return found


def preference_tier(candidate: Candidate) -> int | None:
    """0, 1 or 2 as in the module docstring; None when it is not FLAC at all."""
    if candidate.format.strip().casefold() != "flac":
        return None
    encoding = candidate.encoding.casefold().replace("-", "").replace(" ", "")
    media = candidate.media.strip().casefold()
    if encoding.startswith("24bit") and media in ("web", "vinyl"):
        return 0
    if media == "cd" and candidate.has_log and candidate.log_score == 100 and candidate.has_cue:
        return 1
    return 2


def rank_candidates(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The acceptable candidates, best first (see PREFERENCE in the module docstring)."""
    tiered = [(tier, c) for c in candidates if (tier := preference_tier(c)) is not None]
    tiered.sort(key=lambda pair: (pair[0], -pair[1].seeders, pair[1].torrent_id))
    return [c for _, c in tiered]


def title_matches(candidate: Candidate, title: str) -> bool:
    return normalise_title(candidate.group_name) == normalise_title(title)


def artist_matches(credited: str, names: Iterable[str]) -> bool:
    """Whether a group's credited artist is one of ours, alone or among others ("A & B")."""
    credit = f" {normalise_artist(credited)} "
    return any(f" {normalise_artist(name)} " in credit for name in names if name.strip())


@dataclasses.dataclass
class BatchReport:
    """What one lease did: albums found, not found, and failed (left to their lease)."""

    leased: int = 0
    found: int = 0
    not_found: int = 0
    failed: int = 0


class MetadataWorker:
    """Lease albums, search one site for them, submit the batch, upload what was chosen."""

    def __init__(
        self,
        coordinator: Coordinator,
        gazelle: GazelleClient,
        *,
        site: str,
        batch_size: int = 10,
        artist_cache_ttl: float = ARTIST_CACHE_TTL_SECONDS,
    ) -> None:
        self.coordinator = coordinator
        self.gazelle = gazelle
        self.site = site
        self.batch_size = batch_size
        self.artist_cache_ttl = artist_cache_ttl

    def run_batch(self) -> BatchReport:
        """Lease one batch, submit what was learned, upload the chosen torrents' metadata.

        An album whose search failed (site down, rate limited) is left out of
        the submission, so its lease expires and it is handed out again.
        Credential errors stop the worker (every further request would fail
        too), but what the batch learned before is still submitted.
        """
        report = BatchReport()
        albums = self.coordinator.lease_albums(self.batch_size)
        report.leased = len(albums)
        results: dict[str, list[dict[str, Any]]] = {}
        details: list[dict[str, Any]] = []  # action=torrent responses of the chosen torrents
        try:
            for album in albums:
                try:
                    chosen = self.find_album(album, details)
                except GazelleAuthError:
                    raise
                except GazelleError as exc:
                    log.error("album %s (%r): search failed: %s", album.get("id"), album, exc)
                    report.failed += 1
                    continue
                results[str(album["id"])] = [
                    {"site": self.site, "torrentId": c.torrent_id} for c in chosen
                ]
                report.found += bool(chosen)
                report.not_found += not chosen
        finally:
            if results:
                self._submit(results)
            # After the submission: the download tasks exist, so the registry links them.
            for response in details:
                self._upload(response)
        return report

    def find_album(self, album: dict[str, Any], details: list[dict[str, Any]]) -> list[Candidate]:
        """The chosen torrent of one album ([] when there is none).

        The best candidate's action=torrent response is appended to `details`;
        a listing may be stale, so a candidate the site no longer has gives
        way to the next best.
        """
        title = str(album.get("album") or "")
        names = artist_names(str(album.get("sortArtist") or ""))
        for candidate in rank_candidates(self._search(title, names))[:MAX_TORRENT_ATTEMPTS]:
            try:
                details.append(self.gazelle.torrent(candidate.torrent_id))
            except GazelleFailureError as exc:  # deleted or trumped since the listing
                log.info("torrent %s: %s; trying the next", candidate.torrent_id, exc.error)
                continue
            log.info("album %s: %r -> torrent %s", album.get("id"), title, candidate.torrent_id)
            return [candidate]
        log.info("album %s: %r by %r not found", album.get("id"), title, album.get("sortArtist"))
        return []

    def _search(self, title: str, names: list[str]) -> list[Candidate]:
        """Matching torrents from the artist's page, else from one browse search."""
        for name in names:
            response = self.artist_response(name)
            if response is None:
                continue
            matching = [c for c in candidates_from_artist(response) if title_matches(c, title)]
            if matching:
                return matching
        if not names or not title:
            return []
        # Gazelle matches search words in any order, so the flipped name finds either form.
        page = self.gazelle.browse(f"{names[0]} {title}")
        return [
            c
            for c in candidates_from_browse(page)
            if title_matches(c, title) and artist_matches(c.artist, names)
        ]

    def artist_response(self, name: str) -> dict[str, Any] | None:
        """The site's artist page (None: no such artist), from the 7-day cache when fresh."""
        cached = self.coordinator.get_cached("artist", self.site, name)
        if cached is not MISSING:
            return dict(cached) if isinstance(cached, dict) else None
        try:
            response: dict[str, Any] | None = self.gazelle.artist(name)
        except GazelleFailureError as exc:  # Gazelle's answer for an unknown artist
            log.debug("artist %r: %s", name, exc.error)
            response = None
        self.coordinator.put_cached("artist", self.site, name, response, self.artist_cache_ttl)
        return response

    def _upload(self, response: dict[str, Any]) -> None:
        """Give the registry the torrent's file list; a refusal is logged, not fatal
        (the find is submitted already, and the download worker uploads the .torrent)."""
        try:
            self.coordinator.upload_gazelle(self.site, response)
        except CoordinatorError as exc:
            torrent_id = (response.get("torrent") or {}).get("id")
            log.error("torrent %s: metadata upload refused: %s", torrent_id, exc)

    def _submit(self, results: dict[str, list[dict[str, Any]]]) -> None:
        """POST /metadata/submit; entries the server refuses are logged."""
        try:
            answer = self.coordinator.submit_metadata(results)
        except CoordinatorError as exc:
            if exc.error != "no_valid_entries":
                raise
            log.error("submission refused: %s", exc)
            return
        for key, value in answer.get("albums", {}).items():
            if isinstance(value, dict) and "error" in value:
                log.error("album %s: refused: %s", key, value.get("reason"))
