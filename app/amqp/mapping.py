"""Events → the original http_downloader's AMQP messages, exactly as its neighbours read them.

One event of the log may carry several changes (a worker's files call is ONE
event whose changes are the files, app/sources/files.py), so one event maps
to zero or more messages, in the order of its changes:

| change (aggregate type, name)  | queue                      | body |
|--------------------------------|----------------------------|------|
| `sourcefile` `downloaded`      | `GL_FILE_DOWNLOADED`       | `{"source_id", "filename"}` |
| `sourcefile` `download_skipped`| `GL_FILE_DOWNLOAD_SKIPPED` | `{"source_id", "filename"}` |
| `syncorder` `synchronised`     | `GL_SOURCE_SYNCHRONIZED`   | `{"source_id"}` |

A `synchronised` change marked `ignored` (a stale result that did not end
the order, app/sources/orders.py) is not a synchronisation and maps to
nothing. Every other change maps to nothing.

`source_id` is a number in the original (a database id), ours a slug: a
slug of digits only ("725") is sent as the number 725 so that the original's
neighbours read the same JSON; any other id is sent as the string it is.

A change that the validator let into the log but that cannot make its
message (a file change without a string `filename`, any change without a
`source_id`: an older or another site's app, a bug; it may arrive by
replication) is skipped, logged and counted in the publisher's checkpoint
(`skipped`): raising would stop the publisher at that event on every restart,
since the checkpoint never passes an event that failed.

Each message's id is `<event id>#<index of the change in the event>`: the
same on every send of the same fact, at every site (event ids are global),
so a consumer dedupes by `message_id`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from app.ids import MAX_SAFE_INT
from app.store.events import Doc, aggregate_type

log = logging.getLogger(__name__)

FILE_DOWNLOADED = "GL_FILE_DOWNLOADED"
FILE_DOWNLOAD_SKIPPED = "GL_FILE_DOWNLOAD_SKIPPED"
SOURCE_SYNCHRONIZED = "GL_SOURCE_SYNCHRONIZED"
SYNC_ORDERS = "GL_SYNC_HTTP_SOURCE_ORDERS"
PUBLISHED_QUEUES = (FILE_DOWNLOADED, FILE_DOWNLOAD_SKIPPED, SOURCE_SYNCHRONIZED)

# (aggregate type, change name) -> queue; the file events' data holds source_id and filename
_FILE_QUEUES = {
    ("sourcefile", "downloaded"): FILE_DOWNLOADED,
    ("sourcefile", "download_skipped"): FILE_DOWNLOAD_SKIPPED,
}
_SYNCHRONISED = ("syncorder", "synchronised")


@dataclasses.dataclass(frozen=True)
class Message:
    """One message for the broker: where it goes, its JSON body and its stable id."""

    queue: str
    body: dict[str, Any]
    message_id: str
    at: str  # the event's time (UTC ISO), sent as the AMQP timestamp

    def encoded(self) -> bytes:
        """The body as the original sent it: `json.dumps` with its default separators."""
        return json.dumps(self.body).encode("utf-8")


def message_id(event_id: str, index: int) -> str:
    """The stable id of the message made from change `index` of event `event_id`."""
    return f"{event_id}#{index}"


def wire_source_id(source_id: str) -> int | str:
    """The source id as the original's JSON has it: a number when our slug is one."""
    if source_id.isascii() and source_id.isdigit() and str(int(source_id)) == source_id:
        number = int(source_id)
        if number <= MAX_SAFE_INT:
            return number
    return source_id


class MalformedChangeError(ValueError):
    """A change that should map to a message but lacks what the message needs."""


def messages_of(event: Doc, on_skip: Callable[[str], None] | None = None) -> Iterator[Message]:
    """The messages one event document maps to, in the order of its changes.

    A malformed change is logged and skipped (see the module docstring);
    `on_skip` gets its would-be message id, for the publisher's count.
    """
    for index, change in enumerate(_changes(event)):
        try:
            queue, body = _mapped(change)
        except MalformedChangeError as exc:
            skipped = message_id(str(event.get("_id")), index)
            log.warning("AMQP: not publishing %s: %s", skipped, exc)
            if on_skip is not None:
                on_skip(skipped)
            continue
        if queue is not None:
            yield Message(queue, body, message_id(event["_id"], index), str(event.get("at", "")))


def _changes(event: Doc) -> list[Any]:
    changes = event.get("changes")
    return changes if isinstance(changes, list) else []


def _mapped(change: Any) -> tuple[str | None, dict[str, Any]]:
    """The queue and body of one change, or (None, {}) when it maps to nothing.

    Raises MalformedChangeError when it should map but lacks a field.
    """
    if not isinstance(change, dict):
        return None, {}
    key = (aggregate_type(str(change.get("aggregate", ""))), change.get("name"))
    raw = change.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if key in _FILE_QUEUES:
        filename = data.get("filename")
        if not isinstance(filename, str):
            raise MalformedChangeError(f"a {key[1]} change without a string filename")
        return _FILE_QUEUES[key], {"source_id": _source_id_of(data), "filename": filename}
    if key == _SYNCHRONISED and not data.get("ignored"):
        return SOURCE_SYNCHRONIZED, {"source_id": _source_id_of(data)}
    return None, {}


def _source_id_of(data: dict[str, Any]) -> int | str:
    """The wire source id of a change's data; MalformedChangeError when it has none."""
    raw = data.get("source_id")
    if isinstance(raw, bool) or not isinstance(raw, str | int) or raw == "":
        raise MalformedChangeError("a change without a source_id")
    return wire_source_id(str(raw))
