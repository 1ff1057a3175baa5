"""Settings: defaults < config.yaml < DISTLEECH_* environment < test config.

Everything is merged into one plain dict, validated once with a JSON Schema
(so a bad value fails at start-up with the key's name), then frozen into
dataclasses that the rest of the code reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ENV_PREFIX = "DISTLEECH_"
# Keys that may only come from the environment: secrets never live in a file.
ENV_ONLY_KEYS = {
    ("couchdb", "username"),
    ("couchdb", "password"),
    ("amqp", "username"),
    ("amqp", "password"),
}
# The same for every other site's credentials (DISTLEECH_SITES__<NAME>__USERNAME).
SITE_ENV_ONLY_KEYS = ("username", "password")
DIRECTIONS = ("push", "pull", "both")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class CouchSettings:
    url: str = ""  # empty: use the bundled server that `distleech run` starts
    database: str = "distleech"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 30.0
    bundled_port: int = 5984
    # The event log (the facts; the only database that replicates) and the
    # credentials (password and token hashes; admin-only, never replicated).
    # Empty: "<database>_events" and "<database>_secrets".
    events_database: str = ""
    secrets_database: str = ""


@dataclasses.dataclass(frozen=True)
class SiteSettings:
    # This site's name: recorded in every event it writes and part of event ids.
    # Empty: the host name (made id-safe).
    name: str = ""


@dataclasses.dataclass(frozen=True)
class SiteLinkSettings:
    """Another site: where its event log is and which way events flow."""

    url: str = ""  # the CouchDB URL of its event log, e.g. https://seedbox:6984/distleech_events
    direction: str = "both"  # push (ours to it), pull (its to us), both
    # Replicate the secrets database too, so that one account works at every
    # site; its URL, when empty, is the log's with "_events" turned into "_secrets".
    accounts: bool = True
    accounts_url: str = ""
    username: str = ""  # from the environment only
    password: str = ""


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    threads: int = 8
    max_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 1024 * 1024 * 1024  # admin inventory uploads
    public_url: str = ""  # where people reach the web UI (invite links); empty: http://host:port


@dataclasses.dataclass(frozen=True)
class LeaseSettings:
    metadata_minutes: float = 60
    retry_minutes: float = 24 * 60
    download_days: float = 14
    archive_minutes: float = 60
    archive_max_attempts: int = 3
    max_rows: int = 100
    # With other sites: lease from this site's share of each queue first, and
    # from the others' only when it has nothing due (rare cross-site double leases).
    site_shares: bool = True


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    enabled: bool = True
    reap_seconds: float = 60
    projector_seconds: float = 10
    stats_seconds: float = 60
    leader_lease_seconds: float = 30
    replicate_seconds: float = 10  # one replication per site and direction this often
    replicate_max_backoff_seconds: float = 300  # a failing site is retried at least this often


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    anonymous_workers: bool = False
    credential_cache_seconds: float = 60
    session_hours: float = 12  # a browser session (login) lasts this long
    login_failures_per_account: int = 5  # failed logins per name within login_window_minutes
    login_failures_per_address: int = 20  # failed logins per client address, same window
    login_window_minutes: float = 15


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    heartbeat_record_seconds: float = 60
    offline_after_seconds: float = 300


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    enabled: bool = True  # `distleech run` starts the tracker process
    host: str = "127.0.0.1"  # one address, or several separated by commas (e.g. "127.0.0.1,::1")
    port: int = 6969  # the usual BitTorrent tracker port
    public_url: str = ""  # announce base put into .torrent downloads; empty: http://host:port
    interval_seconds: int = 1800
    min_interval_seconds: int = 900
    numwant_default: int = 50
    numwant_max: int = 200
    max_peers_per_user: int = 5  # clients of one account in one swarm (seedboxes, a laptop…)
    full_scrape: bool = False  # a scrape naming no info_hash lists every tracked torrent
    idle_seconds: float = 60.0  # a connection silent this long is closed (clients reconnect)
    flush_seconds: float = 1.0  # write-behind: how late swarm membership and totals may be
    # how late peers' counters and last-seen times may be stored (at most half the interval)
    refresh_seconds: float = 30.0
    peers_database: str = ""  # empty: "<couchdb.database>_peers"; never replicated


@dataclasses.dataclass(frozen=True)
class SourcesSettings:
    """Remote sources synchronised by workers with gallery-dl (app/sources/)."""

    sync_minutes: float = 60  # a sync order's lease; then another worker may take it
    max_attempts: int = 3  # failed syncs of one order before it stays failed
    schedule_seconds: float = 60  # how often the scheduler queues the syncs that are due


@dataclasses.dataclass(frozen=True)
class EventsSettings:
    """The event stream (server-sent events) and webhooks (app/stream/)."""

    heartbeat_seconds: float = 15  # an SSE comment line this often keeps proxies from closing
    batch: int = 500  # events read from the log per request to CouchDB
    webhook_seconds: float = 5  # the delivery job runs this often
    webhook_timeout_seconds: float = 5  # a receiver slower than this counts as failed
    webhook_max_attempts: int = 8  # then the delivery is a dead letter
    webhook_backoff_seconds: float = 10  # the first retry; doubled each time
    webhook_batch: int = 100  # deliveries per webhook per run of the job (bounded work)
    # A response of GET /api/events ends after this long (a client may ask for less):
    # an open stream holds one of gunicorn's threads, and clients resume by Last-Event-ID.
    stream_max_seconds: float = 300
    retry_seconds: float = 2  # SSE `retry:`: how soon a client reconnects after a response ends
    max_streams: int = 4  # open streams per app process; more get 503 (threads stay free)
    # Webhook URLs whose host is (or resolves to) a loopback, link-local or private
    # address are refused unless this is true: an admin's URL must not reach the
    # internal network (cloud metadata, CouchDB itself) from the scheduler's host.
    webhook_allow_private: bool = False


@dataclasses.dataclass(frozen=True)
class AmqpSettings:
    """The optional AMQP bridge to the original http_downloader's neighbours (off by default)."""

    enabled: bool = False  # `distleech run` starts `distleech amqp bridge` only when true
    url: str = "amqp://127.0.0.1:5672/%2F"  # without credentials: they come from the environment
    username: str = ""  # from the environment only
    password: str = ""
    # A bridge without a checkpoint publishes the whole log (true), or only what happens
    # from its first start on (false: for a big archive whose history nobody wants again).
    from_start: bool = True
    batch: int = 100  # events read from the log per page; the checkpoint moves per page
    prefetch: int = 10  # unacknowledged sync orders the broker hands the bridge at once
    poll_seconds: float = 1.0  # an idle bridge looks at the log this often (and serves orders)
    reconnect_seconds: float = 1.0  # the first wait after the broker went away; doubled each time
    reconnect_max_seconds: float = 30.0  # up to this


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """Where the recorded files live on this machine, for storage status (app/storage/).

    The counts come from the records; these paths only say where to measure
    free space and where `distleech storage check` looks by default.
    """

    content_root: str = ""  # this machine's path of the workers' content root; empty: unknown
    # Ingest volumes, as the scanner recorded their paths, separated by commas: each groups
    # every listing under it and is shown even before anything is recorded there. A
    # listing under none of them belongs to the directory that holds it (the scanned one).
    ingest_volumes: str = ""
    check_examples: int = 20  # missing files a check keeps by name (the rest are only counted)


@dataclasses.dataclass(frozen=True)
class Settings:
    couchdb: CouchSettings = dataclasses.field(default_factory=CouchSettings)
    site: SiteSettings = dataclasses.field(default_factory=SiteSettings)
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    leases: LeaseSettings = dataclasses.field(default_factory=LeaseSettings)
    scheduler: SchedulerSettings = dataclasses.field(default_factory=SchedulerSettings)
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    workers: WorkerSettings = dataclasses.field(default_factory=WorkerSettings)
    tracker: TrackerSettings = dataclasses.field(default_factory=TrackerSettings)
    sources: SourcesSettings = dataclasses.field(default_factory=SourcesSettings)
    events: EventsSettings = dataclasses.field(default_factory=EventsSettings)
    amqp: AmqpSettings = dataclasses.field(default_factory=AmqpSettings)
    storage: StorageSettings = dataclasses.field(default_factory=StorageSettings)
    # The other sites, by their site.name (lower case: environment keys are).
    sites: dict[str, SiteLinkSettings] = dataclasses.field(default_factory=dict)


def _schema_for(cls: type) -> dict[str, Any]:
    """Derive a strict JSON Schema from a settings dataclass."""
    props: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        ftype = hints[field.name]
        if dataclasses.is_dataclass(ftype):
            props[field.name] = _schema_for(ftype)  # type: ignore[arg-type]
        elif typing.get_origin(ftype) is dict:  # a mapping of names to settings (`sites`)
            _, item = typing.get_args(ftype)
            props[field.name] = {"type": "object", "additionalProperties": _schema_for(item)}
        elif ftype is bool:
            props[field.name] = {"type": "boolean"}
        elif ftype is int:
            props[field.name] = {"type": "integer", "minimum": 0}
        elif ftype is float:
            props[field.name] = {"type": "number", "exclusiveMinimum": 0}
        else:
            props[field.name] = {"type": "string"}
    return {"type": "object", "properties": props, "additionalProperties": False}


SCHEMA = _schema_for(Settings)
SCHEMA["properties"]["server"]["properties"]["port"]["maximum"] = 65535
SCHEMA["properties"]["couchdb"]["properties"]["database"]["pattern"] = "^[a-z][a-z0-9_$()+/-]*$"
SCHEMA["properties"]["tracker"]["properties"]["port"]["maximum"] = 65535
for _key in ("events_database", "secrets_database"):
    SCHEMA["properties"]["couchdb"]["properties"][_key]["pattern"] = "^$|^[a-z][a-z0-9_$()+/-]*$"
SCHEMA["properties"]["site"]["properties"]["name"].update(
    pattern="^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
)
for _key in ("interval_seconds", "min_interval_seconds", "max_peers_per_user"):
    SCHEMA["properties"]["tracker"]["properties"][_key]["minimum"] = 1
SCHEMA["properties"]["tracker"]["properties"]["peers_database"]["pattern"] = (
    "^$|^[a-z][a-z0-9_$()+/-]*$"
)
SCHEMA["properties"]["leases"]["properties"]["max_rows"].update(minimum=1, maximum=1000)
_SITE_NAME = "^[a-z0-9][a-z0-9._-]{0,62}$"
SCHEMA["properties"]["sites"]["propertyNames"] = {"pattern": _SITE_NAME}
_LINK = SCHEMA["properties"]["sites"]["additionalProperties"]
_LINK["required"] = ["url"]
# http(s)://host[:port]/<event log database>, no credentials in it (they come from the environment)
_DB_URL = "https?://[^/@\\s]+(:[0-9]+)?/[a-z][a-z0-9_$()+-]*/?"
_LINK["properties"]["url"]["pattern"] = f"^{_DB_URL}$"
_LINK["properties"]["accounts_url"]["pattern"] = f"^$|^{_DB_URL}$"
_LINK["properties"]["direction"]["enum"] = list(DIRECTIONS)
_STORAGE = SCHEMA["properties"]["storage"]["properties"]
_STORAGE["content_root"]["pattern"] = "^$|^/"  # absolute, or empty: unknown here
_STORAGE["ingest_volumes"]["pattern"] = "^\\s*$|^\\s*/[^,]*(,\\s*/[^,]*)*$"  # absolute paths


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_env_value(raw: str) -> Any:
    """Values are JSON when they parse (so `false` and `42` get types), else strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn DISTLEECH_SECTION__KEY=value into {"section": {"key": value}}."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "DISTLEECH_CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        value = _parse_env_value(raw)
        # A string setting keeps the raw text even when it looks like JSON: a
        # password "1234" or a database named "null" are strings, not 1234 or None.
        node[path[-1]] = raw if _is_string_setting(path) else value
    return result


def _is_string_setting(path: list[str]) -> bool:
    node: Any = SCHEMA
    for part in path:
        if not isinstance(node, dict):
            return False
        named = node.get("additionalProperties")  # a mapping of names (`sites`)
        node = (node.get("properties") or {}).get(part) or (
            named if isinstance(named, dict) else None
        )
        if node is None:
            return False
    return bool(node.get("type") == "string")


def _check_no_file_secrets(file_values: Mapping[str, Any]) -> None:
    for section, key in ENV_ONLY_KEYS:
        values = file_values.get(section)
        if isinstance(values, Mapping) and key in values:  # a non-mapping fails validation
            raise ConfigError(
                f"{section}.{key} may only come from the environment "
                f"(DISTLEECH_{section.upper()}__{key.upper()}), never from config.yaml"
            )
    sites = file_values.get("sites")
    for name, link in sites.items() if isinstance(sites, Mapping) else ():
        for key in SITE_ENV_ONLY_KEYS:
            if isinstance(link, Mapping) and key in link:
                raise ConfigError(
                    f"sites.{name}.{key} may only come from the environment "
                    f"(DISTLEECH_SITES__{str(name).upper()}__{key.upper()}), never from config.yaml"
                )


def read_config_file(path: Path) -> dict[str, Any]:
    """Read config.yaml; a missing file means no overrides."""
    if not path.exists():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return loaded


def default_config_path() -> Path:
    return Path(os.environ.get("DISTLEECH_CONFIG", "config.yaml"))


def load_settings(
    test_config: Mapping[str, Any] | None = None,
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge every source, validate, and freeze; raise ConfigError naming the bad key."""
    file_values = read_config_file(config_path or default_config_path())
    _check_no_file_secrets(file_values)
    merged = dataclasses.asdict(Settings())
    for layer in (file_values, env_overrides(os.environ if environ is None else environ)):
        merged = _deep_merge(merged, layer)
    merged = _deep_merge(merged, test_config or {})
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(SCHEMA).iter_errors(merged)
    )
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        message = error.message
        if error.validator == "pattern" and key.endswith("url"):
            message = (
                f"{error.instance!r} is not http(s)://host[:port]/<database> without "
                "credentials (those come from the environment)"
            )
        raise ConfigError(f"config key {key}: {_masked(message)}")
    own = str(merged["site"]["name"]).lower()
    if own and own in merged["sites"]:
        raise ConfigError(f"config key sites.{own}: this is this site's own name (site.name)")
    for name, link in merged["sites"].items():
        if link.get("accounts", True) and not link.get("accounts_url"):
            if not link["url"].rstrip("/").endswith("_events"):
                raise ConfigError(
                    f"config key sites.{name}.accounts_url: the log's URL does not end in "
                    "_events, so say where that site's secrets database is (or accounts: false)"
                )
    return _freeze(merged)


def _masked(message: str) -> str:
    """A validation message without the user:password@ of a URL it quotes."""
    return re.sub(r"//[^\s]*@", "//***@", message)  # up to a URL's last "@"


def _freeze(values: dict[str, Any]) -> Settings:
    hints = typing.get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for name, section_cls in hints.items():
        if name == "sites":
            sections[name] = {
                site: SiteLinkSettings(**link) for site, link in sorted(values[name].items())
            }
            continue
        field_types = typing.get_type_hints(section_cls)
        # JSON Schema's "integer" accepts 5000.0: give each field its declared type.
        typed = {
            key: field_types[key](value) if field_types[key] in (int, float) else value
            for key, value in values[name].items()
        }
        sections[name] = section_cls(**typed)
    return Settings(**sections)
