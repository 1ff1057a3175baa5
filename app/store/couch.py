"""A thin, typed CouchDB client over requests.Session.

Why not a client library: `cloudant` is end-of-life (its retry adapter breaks
with urllib3 2), `couchdb` (CouchDB-Python) is unmaintained, and the
maintained `ibmcloudant` was measured with stalls on failed session auth and
more than twice the client CPU of plain requests on bulk writes. This module
stays inside what Apache CouchDB 3.x, Cloudant and the bundled pouchdb-server
all do (see COUCHDB-COMPAT.md in the design notes): explicit timeouts, a pool
sized to the threads that use it, retries only for idempotent reads, the JSON
content type always, and bulk results matched to inputs by id.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# View parameters CouchDB expects JSON-encoded in the query string.
JSON_PARAMS = {"key", "keys", "startkey", "endkey", "start_key", "end_key"}
RETRY_STATUSES = {502, 503, 504}


class CouchError(Exception):
    """CouchDB answered with an error; carries its status, error and reason."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status, self.error, self.reason = status, error, reason


class DocumentConflictError(CouchError):
    """409: someone else wrote that revision (or created that id) first."""


class DocumentNotFoundError(CouchError):
    """404: no such document, database or view."""


class UnauthorizedError(CouchError):
    """401/403: the credentials are missing, wrong, or not allowed this."""


class CouchUnavailableError(CouchError):
    """The server could not be reached or kept failing."""


_ERRORS_BY_STATUS: dict[int, type[CouchError]] = {
    401: UnauthorizedError,
    403: UnauthorizedError,
    404: DocumentNotFoundError,
    409: DocumentConflictError,
    412: DocumentConflictError,  # PUT of a database that exists
}


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """The outcome of one document of a _bulk_docs call."""

    id: str
    rev: str | None = None
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    encoded = {}
    for name, value in params.items():
        if value is None:
            continue
        if name in JSON_PARAMS or isinstance(value, bool):
            encoded[name] = json.dumps(value)
        else:
            encoded[name] = str(value)
    return encoded


class CouchServer:
    """One CouchDB server (or cluster endpoint) and its connection pool."""

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        pool_size: int = 16,
        retries: int = 3,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.username = username  # never the password: this may be logged
        if username:
            self.session.auth = (username, password)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; raise a typed CouchError on any error status."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                response = self.session.request(
                    method,
                    f"{self.url}/{path}",
                    params=_encode_params(params or {}),
                    data=data,
                    headers=JSON_HEADERS,
                    timeout=timeout or self.timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                if attempt + 1 < attempts:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise CouchUnavailableError(0, "unavailable", str(exc)) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            return response
        raise AssertionError("unreachable")

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def info(self) -> dict[str, Any]:
        return dict(self.get_json(""))

    def database(self, name: str) -> Database:
        return Database(self, name)

    def create_database(self, name: str) -> Database:
        """Create the database unless it exists; return it either way."""
        try:
            self.request("PUT", quote(name, safe=""))
        except DocumentConflictError:
            pass
        return self.database(name)

    def delete_database(self, name: str) -> None:
        try:
            self.request("DELETE", quote(name, safe=""))
        except DocumentNotFoundError:
            pass

    def database_exists(self, name: str) -> bool:
        try:
            self.request("HEAD", quote(name, safe=""))
        except DocumentNotFoundError:
            return False
        return True


def _error_from(response: requests.Response) -> CouchError:
    try:
        body = response.json()
        error, reason = str(body.get("error", "")), str(body.get("reason", ""))
    except ValueError:
        error, reason = "http_error", response.text[:200]
    if response.status_code >= 500:
        return CouchUnavailableError(response.status_code, error, reason)
    cls = _ERRORS_BY_STATUS.get(response.status_code, CouchError)
    return cls(response.status_code, error, reason)


def prefix_range(prefix: str) -> dict[str, Any]:
    """_all_docs parameters for every id that starts with `prefix` ("" for all)."""
    if not prefix:
        return {}
    return {"endkey": prefix_end(prefix), "inclusive_end": False}


def prefix_end(prefix: str) -> str:
    """The first id after every id that starts with `prefix` (an exclusive end key).

    `prefix + "\\ufff0"` would miss ids with a character above U+FFF0 (say an
    emoji, U+1F600) right after the prefix: _all_docs orders ids by their
    UTF-8 bytes on Apache CouchDB. Every prefix we use ends in ":".
    """
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Database:
    """One database: documents, bulk writes, views and the changes feed."""

    def __init__(
        self,
        server: CouchServer,
        name: str,
        *,
        companions: Mapping[str, str] | None = None,
        site: str = "",
    ) -> None:
        self.server = server
        self.name = name
        self.site = site  # the site name events written through this database record
        self.path = quote(name, safe="")
        # The databases that belong with this one (the read model): "events" (the
        # log), "secrets" (credentials), "peers" (tracker swarms). Unnamed ones
        # default to "<name>_<role>".
        self.companion_names = dict(companions or {})
        self._companions: dict[str, Database] = {}

    def companion(self, role: str) -> Database:
        """The database of this deployment that plays `role` ("events", "secrets", "peers")."""
        if role not in self._companions:
            name = self.companion_names.get(role) or f"{self.name}_{role}"
            self._companions[role] = Database(self.server, name, site=self.site)
        return self._companions[role]

    @property
    def server_url(self) -> str:
        return self.server.url

    def _doc_path(self, doc_id: str) -> str:
        # The slash of a design or local document id is part of the URL path, unquoted.
        for prefix in ("_design/", "_local/"):
            if doc_id.startswith(prefix):
                return f"{self.path}/{prefix}{quote(doc_id[len(prefix) :], safe='')}"
        return f"{self.path}/{quote(doc_id, safe='')}"

    def info(self) -> dict[str, Any]:
        return dict(self.server.get_json(self.path))

    def get(self, doc_id: str, **params: Any) -> dict[str, Any]:
        """Fetch a document; raise DocumentNotFoundError when it is missing."""
        return dict(self.server.request("GET", self._doc_path(doc_id), params=params).json())

    def get_or_none(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return self.get(doc_id)
        except DocumentNotFoundError:
            return None

    def put(self, doc: dict[str, Any]) -> str:
        """Write one document (its _rev decides conflicts); set and return the new _rev."""
        body = self.server.request("PUT", self._doc_path(doc["_id"]), body=doc).json()
        doc["_rev"] = body["rev"]
        return str(body["rev"])

    def delete(self, doc_id: str, rev: str) -> None:
        self.server.request("DELETE", self._doc_path(doc_id), params={"rev": rev})

    def bulk_docs(
        self, docs: Sequence[Mapping[str, Any]], *, new_edits: bool = True
    ) -> list[BulkResult]:
        """Write many documents at once; results come back in input order.

        pouchdb-server reorders results when design or rejected documents are
        in the batch, so results are matched to inputs by id, never by position.
        """
        if not docs:
            return []
        ids = [doc["_id"] for doc in docs]
        if len(set(ids)) != len(ids):
            raise ValueError("a _bulk_docs batch must not name one id twice")
        body: dict[str, Any] = {"docs": list(docs)}
        if not new_edits:
            body["new_edits"] = False
        rows = self.server.request("POST", f"{self.path}/_bulk_docs", body=body).json()
        by_id = {row.get("id"): row for row in rows}
        results = []
        for doc_id in ids:
            row = by_id.get(doc_id)
            if row is None and not new_edits:
                results.append(BulkResult(doc_id))  # new_edits=false answers only failures
            elif row is None:  # never count a document without an answer as written
                results.append(BulkResult(doc_id, None, "missing_result", "no row for this id"))
            else:
                results.append(
                    BulkResult(doc_id, row.get("rev"), row.get("error"), row.get("reason"))
                )
        return results

    def all_docs(self, keys: Iterable[str], *, include_docs: bool = True) -> list[dict[str, Any]]:
        """Look up documents by id; rows for missing ids carry "error": "not_found"."""
        key_list = list(keys)
        if not key_list:
            return []
        return self.server.request(
            "POST",
            f"{self.path}/_all_docs",
            params={"include_docs": include_docs},
            body={"keys": key_list},
            idempotent=True,
        ).json()["rows"]

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Fetch the documents that exist among ids, by id."""
        found = {}
        for row in self.all_docs(ids):
            doc = row.get("doc")
            if doc is not None:
                found[row["key"]] = doc
        return found

    def iter_ids(self, prefix: str, *, page_size: int = 5000) -> Iterator[str]:
        """Yield every document id that starts with `prefix`, in id order (no bodies read)."""
        for row in self._iter_all_docs(prefix, page_size, include_docs=False):
            yield row["id"]

    def iter_prefix(self, prefix: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Yield every document whose id starts with `prefix`, in id order, a page at a time.

        Ids are `<type>:<key>`, so a type's documents are one contiguous
        _all_docs range: no view needed.
        """
        for row in self._iter_all_docs(prefix, page_size, include_docs=True):
            if row.get("doc"):
                yield row["doc"]

    def _iter_all_docs(
        self, prefix: str, page_size: int, *, include_docs: bool
    ) -> Iterator[dict[str, Any]]:
        startkey, skip = prefix, 0
        while True:
            params = {"startkey": startkey, **prefix_range(prefix), "limit": page_size}
            params.update(skip=skip, include_docs=include_docs)
            rows = self.server.request("GET", f"{self.path}/_all_docs", params=params).json()
            yield from rows["rows"]
            if len(rows["rows"]) < page_size:
                return
            startkey, skip = rows["rows"][-1]["id"], 1

    def view(
        self, ddoc: str, view: str, *, keys: Sequence[Any] | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        """Query a view; `keys` goes in a POST body, everything else in the query string."""
        path = f"{self.path}/_design/{ddoc}/_view/{view}"
        if keys is not None:
            response = self.server.request(
                "POST", path, params=params, body={"keys": list(keys)}, idempotent=True
            )
        else:
            response = self.server.request("GET", path, params=params)
        return list(response.json()["rows"])

    def changes(self, **params: Any) -> dict[str, Any]:
        """One normal (non-feed) read of _changes; `seq` values are opaque."""
        return dict(self.server.request("GET", f"{self.path}/_changes", params=params).json())

    def iter_view(
        self, ddoc: str, view: str, *, page_size: int = 1000, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Page through a whole view range with startkey + skip=1 (no startkey_docid).

        pouchdb-server ignores startkey_docid, so a key emitted by many
        documents is paged by counting how many rows of the last key were seen.
        """
        params = dict(params)
        last_key: Any = None
        seen_of_last_key = 0
        while True:
            page_params = dict(params, limit=page_size)
            if last_key is not None:
                page_params["startkey"] = last_key
                page_params["skip"] = seen_of_last_key
            rows = self.view(ddoc, view, **page_params)
            yield from rows
            if len(rows) < page_size:
                return
            new_last = rows[-1]["key"]
            same = sum(1 for row in rows if row["key"] == new_last)
            seen_of_last_key = seen_of_last_key + same if new_last == last_key else same
            last_key = new_last
