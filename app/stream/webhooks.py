"""Webhooks: an admin's standing order to POST matching events to a URL, signed.

A webhook is an aggregate `webhook:<random public id>`:
- `registered` {url, types, names}: deliver the events that match the filter
  (app/stream/feed.py EventFilter) to `url`;
- `removed` {}: stop.

Its secret (the HMAC key of every delivery) never enters the log: the log
replicates to every site and can never be purged. It lives in the secrets
database as `webhook_secret:<id>` {type, webhook, secret}, in the clear
because signing needs it (like a tracker passkey), and is deleted and
compacted away when the webhook is removed. A URL with user:password@ is
refused for the same reason: the URL is in the log.

A webhook removed at another site arrives here as a `removed` event only:
the delivery job (app/stream/delivery.py) then forgets what this site keeps
of it (forget_removed_webhooks), as remove_webhook does for a local removal.

A URL whose host is, or resolves to, an address that is not globally
routable (loopback, private, link-local, CGNAT, …) is refused unless
`events.webhook_allow_private`: otherwise an admin's URL (or a DNS record
that changes later) could make the scheduler POST into the internal network.
It is checked here at registration and again at every connection the
delivery job opens (delivery.py), since DNS may change in between.

Deliveries are made by the site that registered the webhook (the `site` of
its `registered` change), so that two replicating sites never deliver each
event twice; that site's log holds every site's events anyway. Where each
webhook is in the log, its retries and its dead letters are local state of
the read model (app/stream/delivery.py, app/stream/deadletters.py).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from app.accounts import credentials
from app.errors import InvalidUrlError, ValidationFailedError, WebhookNotFoundError
from app.store.commit import commit
from app.store.couch import Database, DocumentConflictError, DocumentNotFoundError
from app.store.events import Doc, site_of
from app.stream import deadletters
from app.stream.feed import check_filter_values, current_seq

WEBHOOK = "webhook"
ACTIVE, REMOVED = "active", "removed"
SECRET_PREFIX = "webhook_secret:"
CHECKPOINT_PREFIX = "_local/webhook:"
SINCE_CHOICES = ("now", "start")
MAX_URL_LENGTH = 2000


def webhook_doc_id(webhook_id: str) -> str:
    return f"{WEBHOOK}:{webhook_id}"


def checkpoint_id(webhook_id: str) -> str:
    """Where a webhook's position in the log lives: a `_local` doc of the read model.

    `_local` documents never replicate (each site has its own log sequence)
    and are not projections, so a rebuild leaves them alone.
    """
    return f"{CHECKPOINT_PREFIX}{webhook_id}"


def apply_webhook_event(state: Doc, change: Doc) -> None:
    """Fold one change of a webhook; the site that registered it delivers it."""
    name, data = change["name"], change["data"]
    if name == "registered":
        state.update(
            url=data["url"],
            types=data["types"],
            names=data["names"],
            state=ACTIVE,
            site=change.get("site", ""),
            registered_at=change["at"],
        )
    elif name == "removed":
        state.update(state=REMOVED, removed_at=change["at"])


def check_url(url: str, *, allow_private: bool = False) -> str:
    """An http(s) URL without credentials or fragment, to a public host unless
    `allow_private`; raise InvalidUrlError if not."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidUrlError(f"A webhook URL is http:// or https:// with a host, not {url!r}.")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrlError(
            "A webhook URL may not carry user:password@: the URL is recorded in the event log;"
            " receivers authenticate deliveries by their signature."
        )
    if parts.fragment or len(url) > MAX_URL_LENGTH:
        raise InvalidUrlError(f"A webhook URL has no #fragment and at most {MAX_URL_LENGTH} chars.")
    if not allow_private:
        check_public_host(parts.hostname)
    return parts.geturl()


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (an IPv4-mapped IPv6 one as its IPv4).

    `not is_global` covers loopback, private, link-local (cloud metadata at
    169.254.169.254), unspecified, CGNAT and reserved ranges in one rule.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_public_host(host: str) -> None:
    """Raise InvalidUrlError unless every address the host resolves to is public.

    Every address, not the first: a resolver may hand out any of them later.
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidUrlError(f"The webhook host {host!r} does not resolve.") from None
    for *_, sockaddr in infos:
        if not is_public_address(str(sockaddr[0])):
            raise InvalidUrlError(
                f"The webhook host {host!r} is a loopback, private or link-local address"
                f" ({sockaddr[0]}); events.webhook_allow_private allows it."
            )


def _filter_values(values: list[str] | None, what: str) -> list[str]:
    try:
        return sorted(check_filter_values(values or [], what))
    except ValueError as exc:
        raise ValidationFailedError(f"Invalid {what}: {exc}.", field=what) from None


def register_webhook(
    db: Database,
    url: str,
    *,
    types: list[str] | None = None,
    names: list[str] | None = None,
    since: str = "now",
    allow_private: bool = False,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Register a webhook; return it with its secret (shown this once).

    The secret and the checkpoint are stored before the `registered` event:
    a crash in between leaves a secret and a position of no webhook, which
    deliver nothing. `since` is "now" (events from now on) or "start" (the
    whole log first).
    """
    data = _registration(url, types, names, since, allow_private)
    webhook_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    _store_secret(db, webhook_id, secret)
    db.put({"_id": checkpoint_id(webhook_id), "seq": current_seq(db) if since == "now" else "0"})
    return {**_record_registration(db, webhook_id, data, actor, now), "secret": secret}


def _registration(
    url: str, types: list[str] | None, names: list[str] | None, since: str, allow_private: bool
) -> dict[str, Any]:
    """The `registered` event's data; raise 400s. The URL last: it may ask DNS."""
    types, names = _filter_values(types, "types"), _filter_values(names, "names")
    if since not in SINCE_CHOICES:
        raise ValidationFailedError("since is 'now' or 'start'.", field="since")
    return {"url": check_url(url, allow_private=allow_private), "types": types, "names": names}


def _record_registration(
    db: Database, webhook_id: str, data: dict[str, Any], actor: str, now: datetime
) -> dict[str, Any]:
    """Record `registered` for a fresh id; return the webhook as the API shows it."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("registered", data) if state is None else None  # an id is never reused

    [outcome] = commit(db, [(webhook_doc_id(webhook_id), decide)], actor=actor, now=now)
    if not outcome.recorded or outcome.state is None:  # 64 random bits collided
        raise RuntimeError(f"webhook id {webhook_id} is taken; register it again")
    return public_webhook(outcome.state)


def remove_webhook(db: Database, webhook_id: str, *, actor: str, now: datetime) -> dict[str, Any]:
    """Stop a webhook: record `removed`, then forget its secret, position and dead letters."""

    def decide(state: Doc | None) -> tuple[str, dict[str, Any]] | None:
        return ("removed", {}) if state and state.get("state") == ACTIVE else None

    [outcome] = commit(db, [(webhook_doc_id(webhook_id), decide)], actor=actor, now=now)
    if not outcome.recorded or outcome.state is None:
        raise WebhookNotFoundError(f"No webhook {webhook_id!r}.", webhook=webhook_id)
    forget_webhook(db, webhook_id)
    return public_webhook(outcome.state)


def forget_webhook(db: Database, webhook_id: str) -> None:
    """Delete what this site keeps of a removed webhook: position, dead letters, secret.

    The secret goes last: while it exists the delivery job treats the
    webhook as not yet forgotten (forget_removed_webhooks), so a crash
    half-way is finished by the job's next run. Idempotent.
    """
    _delete_quietly(db, checkpoint_id(webhook_id))
    deadletters.forget_all(db, webhook_id)
    _forget_secret(db, webhook_id)


def forget_removed_webhooks(db: Database, docs: list[Doc]) -> list[str]:
    """Forget the removed webhooks among `docs` whose secret is still here; return their ids.

    A webhook removed at another site reaches this one as its `removed`
    event only, so remove_webhook's clean-up never ran here. The projector
    stays a pure fold; the delivery job calls this. One lookup for all.
    """
    removed = [public_id(doc) for doc in docs if doc.get("state") == REMOVED]
    if not removed:
        return []
    try:
        rows = credentials.secrets_db(db).all_docs(
            [SECRET_PREFIX + webhook_id for webhook_id in removed], include_docs=False
        )
    except DocumentNotFoundError:  # no secrets database: nothing to forget
        return []
    kept = {row["key"] for row in rows if "error" not in row and not row["value"].get("deleted")}
    forgotten = [webhook_id for webhook_id in removed if SECRET_PREFIX + webhook_id in kept]
    for webhook_id in forgotten:
        forget_webhook(db, webhook_id)
    return forgotten


def public_id(doc: Doc) -> str:
    """A webhook's public id from its projection's document id."""
    return str(doc["_id"]).removeprefix(f"{WEBHOOK}:")


def get_webhook(db: Database, webhook_id: str) -> Doc:
    """An active webhook's projection; raise WebhookNotFoundError if none."""
    doc = db.get_or_none(webhook_doc_id(webhook_id)) if webhook_id else None
    if not doc or doc.get("state") != ACTIVE:
        raise WebhookNotFoundError(f"No webhook {webhook_id!r}.", webhook=webhook_id)
    return doc


def list_webhooks(db: Database) -> list[Doc]:
    """Every active webhook's projection, by id (there are few: one id range read)."""
    return [doc for doc in all_webhooks(db) if doc.get("state") == ACTIVE]


def all_webhooks(db: Database) -> list[Doc]:
    """Every webhook's projection, removed ones too, by id."""
    return list(db.iter_prefix(f"{WEBHOOK}:"))


def is_active(db: Database, webhook_id: str) -> bool:
    """Whether the webhook is still active: one read of its projection."""
    doc = db.get_or_none(webhook_doc_id(webhook_id))
    return bool(doc and doc.get("state") == ACTIVE)


def is_delivered_here(db: Database, webhook: Doc) -> bool:
    """Whether this site delivers the webhook (the site that registered it does)."""
    return bool(webhook.get("state") == ACTIVE and webhook.get("site") == site_of(db))


def public_webhook(doc: Doc) -> dict[str, Any]:
    """What the API and CLI show of a webhook (never its secret)."""
    return {
        "id": public_id(doc),
        "url": doc["url"],
        "types": doc.get("types", []),
        "names": doc.get("names", []),
        "state": doc.get("state"),
        "site": doc.get("site", ""),
        "registered_at": doc.get("registered_at"),
    }


def get_secret(db: Database, webhook_id: str) -> str | None:
    """The webhook's signing secret, or None when it is gone (removed, or never stored)."""
    try:
        doc = credentials.secrets_db(db).get(SECRET_PREFIX + webhook_id)
    except DocumentNotFoundError:
        return None
    return str(doc["secret"])


def _store_secret(db: Database, webhook_id: str, secret: str) -> None:
    """Write the secret under a fresh id (nothing to replace, so nothing to compact)."""
    credentials.init_secrets_database(db)
    doc = {"_id": SECRET_PREFIX + webhook_id, "type": "webhook_secret", "webhook": webhook_id}
    credentials.secrets_db(db).put({**doc, "secret": secret})


def _forget_secret(db: Database, webhook_id: str) -> None:
    """Delete the secret for good: the deleted body is compacted away too."""
    sdb = credentials.secrets_db(db)
    doc = sdb.get_or_none(SECRET_PREFIX + webhook_id)
    if doc is None:
        return
    try:
        sdb.delete(doc["_id"], doc["_rev"])
    except (DocumentConflictError, DocumentNotFoundError):
        return  # removed at the same moment elsewhere
    credentials.compact_secrets(db)


def _delete_quietly(db: Database, doc_id: str) -> None:
    doc = db.get_or_none(doc_id)
    if doc is not None:
        try:
            db.delete(doc_id, doc["_rev"])
        except (DocumentConflictError, DocumentNotFoundError):
            pass  # the delivery job wrote it meanwhile; it is only a position
