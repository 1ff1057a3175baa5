"""The other sites this one replicates its event log with, and how to reach them.

A link names another site (by its `site.name`), the CouchDB URL of its event
log and the direction events flow: `push` (this site's events go there),
`pull` (its events come here) or `both`. Every replication runs on this
site's CouchDB as a one-shot `_replicate` of the event log, filtered to
event documents (`log/events`), followed (with `accounts`, the default) by
one of the secrets database (app/sites/accounts.py); design documents, the
read model, the peers database, caches, checkpoints and the leader lease
never leave the site.

Credentials come from the environment only (DISTLEECH_SITES__<NAME>__USERNAME
and __PASSWORD; this site's own from DISTLEECH_COUCHDB__*). They travel in
the endpoint URLs of the `_replicate` body, the one place both servers accept
them, and are masked (`redact`) in everything this module logs or stores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from urllib.parse import quote, urlsplit, urlunsplit

from app.config import Settings, SiteLinkSettings
from app.store.couch import CouchServer, Database
from app.store.events import default_site_name

PUSH, PULL = "push", "pull"
FILTER = "log/events"  # in the source's _design/log: events only, never design docs
MASK = "***"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One side of a replication: an event log's URL and the credentials to reach it."""

    url: str  # http(s)://host[:port]/<database>, without credentials
    username: str = ""
    password: str = ""

    @property
    def server_url(self) -> str:
        return self.url.rsplit("/", 1)[0]

    @property
    def database(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def with_credentials(self) -> str:
        """The URL with user:password@ in it, for the `_replicate` body only."""
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        userinfo = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    def secrets(self) -> list[str]:
        """What must never appear in a log line or a stored error."""
        if not self.password:
            return []
        return [self.password, quote(self.password, safe="")]

    def open(self, *, timeout: float) -> Database:
        """This event log as a Database (no retries: the caller reports and backs off)."""
        server = CouchServer(
            self.server_url,
            username=self.username,
            password=self.password,
            timeout=timeout,
            pool_size=2,
            retries=0,
        )
        return Database(server, self.database)


@dataclasses.dataclass(frozen=True)
class SiteLink:
    """Another site, as configured under `sites:`."""

    name: str
    remote: Endpoint
    direction: str
    accounts: Endpoint | None = None  # its secrets database, when accounts replicate

    @property
    def flows(self) -> tuple[str, ...]:
        """The directions replicated: ("push",), ("pull",) or both."""
        return (PUSH, PULL) if self.direction == "both" else (self.direction,)


def site_links(settings: Settings) -> list[SiteLink]:
    """Every configured site, in name order."""
    return [_link(name, link) for name, link in sorted(settings.sites.items())]


def _link(name: str, link: SiteLinkSettings) -> SiteLink:
    url = link.url.rstrip("/")
    remote = Endpoint(url, link.username, link.password)
    if not link.accounts:
        return SiteLink(name, remote, link.direction)
    secrets_url = link.accounts_url.rstrip("/") or url.removesuffix("_events") + "_secrets"
    accounts = Endpoint(secrets_url, link.username, link.password)
    return SiteLink(name, remote, link.direction, accounts)


def local_endpoint(db: Database, role: str = "events") -> Endpoint:
    """This site's event log (or secrets database), reached as its own processes do."""
    companion = db.companion(role)
    auth = db.server.session.auth
    username, password = auth if isinstance(auth, tuple) else ("", "")
    return Endpoint(f"{db.server.url}/{quote(companion.name, safe='')}", username, password)


def redact(text: str, endpoints: Iterable[Endpoint]) -> str:
    """`text` with every password of these endpoints masked."""
    for endpoint in endpoints:
        for secret in endpoint.secrets():
            text = text.replace(secret, MASK)
    return text


def site_share(settings: Settings) -> tuple[int, int]:
    """(this site's share, how many shares) of every queue for leasing.

    Every site names the others under `sites:`, so each computes the same
    sorted list of names and takes its own place in it. (0, 1), one share
    for all, without other sites or with `leases.site_shares: false`.
    """
    if not settings.leases.site_shares or not settings.sites:
        return 0, 1
    own = (settings.site.name or default_site_name()).lower()
    names = sorted({own, *settings.sites})
    return names.index(own), len(names)
