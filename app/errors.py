"""Errors reported to clients, in CouchDB's own {"error", "reason"} shape.

Every code here is listed in README.md and never changes once shipped.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.store.couch import CouchUnavailableError
from app.store.events import ConcurrencyError

log = logging.getLogger(__name__)

# "scheme://user:password@host": the user-info part of any URL in a text.
_URL_USERINFO = re.compile(r"(?<=://)[^/?#@\s'\"]+@")


def redact_credentials(text: str, *secrets: str) -> str:
    """The text with every URL's user:password@ and each given secret shown as ***.

    Everything a person or a log may see goes through this first: a
    couchdb.url may carry its password (http://admin:secret@host:5984), and
    exception texts quote the URLs they failed on.
    """
    text = _URL_USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class ApiError(Exception):
    """Base for errors reported to clients; subclasses pin status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason, self.details = reason, details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "reason": self.reason}
        if self.details:
            body["details"] = self.details
        return body


class BadRequestError(ApiError):
    status, code = 400, "bad_request"


class InvalidJsonError(ApiError):
    status, code = 400, "invalid_json"


class ValidationFailedError(ApiError):
    status, code = 400, "validation_failed"


class InvalidRowsError(ApiError):
    status, code = 400, "invalid_rows"


class InvalidCsvError(ApiError):
    status, code = 400, "invalid_csv"


class UnsupportedMediaTypeError(ApiError):
    status, code = 415, "unsupported_media_type"


# Every 401 says how to get a credential and how to send it: a caller who got
# one has nobody else to ask. The commands are the real ones in app/cli/main.py.
HOW_TO_AUTHENTICATE = (
    "Workers and queuers send a token as 'X-AUTHENTICATION: <token>' (or"
    " 'Authorization: Bearer <token>'); an operator makes one with"
    " `distleech token add --role worker NAME` (or --role queuer)."
    " Users and admins send HTTP basic auth ('Authorization: Basic ...', curl -u NAME);"
    " an operator adds one with `distleech user add NAME [--admin]`."
)


class _Unauthenticated(ApiError):
    """A 401: the reason ends with how to get and send a credential."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(f"{reason} {HOW_TO_AUTHENTICATE}", **details)


class AuthenticationRequiredError(_Unauthenticated):
    status, code = 401, "authentication_required"


class InvalidCredentialsError(_Unauthenticated):
    status, code = 401, "invalid_credentials"


class CrossSiteRequestError(ApiError):
    """A browser sent a state-changing request on behalf of another site's page."""

    status, code = 403, "cross_site_request"


class ForbiddenError(ApiError):
    status, code = 403, "forbidden"


class NotFoundError(ApiError):
    status, code = 404, "not_found"


class TaskNotFoundError(ApiError):
    status, code = 404, "task_not_found"


class MissingFieldError(ApiError):
    status, code = 400, "missing_field"


class InvalidUrlError(ApiError):
    status, code = 400, "invalid_url"


class InvalidModeError(ApiError):
    status, code = 400, "invalid_mode"


class InvalidTaskIdError(ApiError):
    status, code = 400, "invalid_task_id"


class InvalidStatusError(ApiError):
    status, code = 400, "invalid_status"


class InvalidReasonError(ApiError):
    status, code = 400, "invalid_reason"


class InvalidNameError(ApiError):
    status, code = 400, "invalid_name"


# Torrent registry and ingest.


class InfoHashUnknownError(ApiError):
    status, code = 400, "info_hash_unknown"


class InvalidInfoHashError(ApiError):
    status, code = 400, "invalid_info_hash"


class InvalidTorrentFileError(ApiError):
    status, code = 400, "invalid_torrent_file"


class InvalidGazelleError(ApiError):
    status, code = 400, "invalid_gazelle"


class InvalidSiteError(ApiError):
    status, code = 400, "invalid_site"


class InvalidTorrentIdError(ApiError):
    status, code = 400, "invalid_torrent_id"


class InfoHashMismatchError(ApiError):
    status, code = 400, "info_hash_mismatch"


class TorrentIdMismatchError(ApiError):
    status, code = 400, "torrent_id_mismatch"


class SiteTorrentConflictError(ApiError):
    status, code = 409, "site_torrent_conflict"


class TorrentNotFoundError(ApiError):
    status, code = 404, "torrent_not_found"


class TorrentFileNotFoundError(ApiError):
    status, code = 404, "torrent_file_not_found"


class InvalidQueryError(ApiError):
    status, code = 400, "invalid_query"


class InvalidListingError(ApiError):
    status, code = 400, "invalid_listing"


# The private tracker's directory: tracked torrents, tracker users, the client whitelist.


class InvalidPasskeyError(ApiError):
    status, code = 400, "invalid_passkey"


class InvalidUserIdError(ApiError):
    status, code = 400, "invalid_user_id"


class InvalidPrefixError(ApiError):
    status, code = 400, "invalid_prefix"


class TorrentAlreadyTrackedError(ApiError):
    status, code = 409, "torrent_already_tracked"


class TorrentIdTakenError(ApiError):
    status, code = 409, "torrent_id_taken"


class TorrentNotTrackedError(ApiError):
    status, code = 404, "torrent_not_tracked"


class TrackerUserExistsError(ApiError):
    status, code = 409, "tracker_user_exists"


class TrackerUserNotFoundError(ApiError):
    status, code = 404, "tracker_user_not_found"


class PasskeyTakenError(ApiError):
    status, code = 409, "passkey_taken"


class UnknownPasskeyError(ApiError):
    """The passkey of a download link belongs to no active tracker user."""

    status, code = 403, "unknown_passkey"


class WhitelistEntryExistsError(ApiError):
    status, code = 409, "whitelist_entry_exists"


class WhitelistEntryNotFoundError(ApiError):
    status, code = 404, "whitelist_entry_not_found"


class CacheMissError(ApiError):
    """Nothing fresh is cached under that key: fetch it from the site."""

    status: ClassVar[int] = 404
    code: ClassVar[str] = "cache_miss"


class AlreadyExistsError(ApiError):
    status, code = 409, "already_exists"


class InvalidInviteError(ApiError):
    status, code = 400, "invalid_invite"


class CsrfFailedError(ApiError):
    status, code = 403, "csrf_failed"


class TooManyAttemptsError(ApiError):
    status, code = 429, "too_many_attempts"


class UserNotFoundError(ApiError):
    status, code = 404, "user_not_found"


class MethodNotAllowedError(ApiError):
    status, code = 405, "method_not_allowed"

    def __init__(self, reason: str, *, allowed: tuple[str, ...] = (), **details: Any) -> None:
        super().__init__(reason, **details)
        self.allowed = allowed


class PayloadTooLargeError(ApiError):
    status, code = 413, "payload_too_large"


class DatabaseUnavailableError(ApiError):
    status, code = 503, "database_unavailable"


class TryAgainError(ApiError):
    status, code = 503, "try_again"


# Werkzeug's HTTP errors mapped to our stable codes; anything else keeps its name.
_HTTP_CODES = {
    400: "bad_request",
    401: "authentication_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(error: ApiError) -> Response:
    response = jsonify(error.to_body())
    response.status_code = error.status
    if isinstance(error, MethodNotAllowedError) and error.allowed:
        response.headers["Allow"] = ", ".join(error.allowed)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="distleech"'
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer every failure, including unknown routes and 405, as a JSON error body."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        response = error_response(error)
        if isinstance(error, TooManyAttemptsError):
            response.headers["Retry-After"] = str(error.details.get("retry_after", 60))
        return response

    @app.errorhandler(ConcurrencyError)
    def _contended(error: ConcurrencyError) -> Response:
        # Other writers kept winning the same documents; nothing of this request is lost
        # that a retry would not redo, so tell the client to come back shortly.
        response = error_response(TryAgainError(str(error)))
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(CouchUnavailableError)
    def _couch_down(error: CouchUnavailableError) -> Response:
        log.error("CouchDB unavailable: %s", error)
        return error_response(DatabaseUnavailableError("The database did not answer as expected."))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        code = _HTTP_CODES.get(error.code or 500, "http_error")
        response = jsonify({"error": code, "reason": error.description})
        response.status_code = error.code or 500
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        response = jsonify({"error": "internal_error", "reason": "Internal server error."})
        response.status_code = 500
        return response


# Ingest batches (POST /api/ingest with {"listings": [...]}).


class BatchTooLargeError(ApiError):
    """More listings, or more files over all listings, than one batch may carry."""

    status, code = 400, "batch_too_large"


# Remote sources and their sync orders (app/sources/, /api/sources).


class InvalidSourceIdError(ApiError):
    status, code = 400, "invalid_source_id"


class InvalidContentPathError(ApiError):
    """A content path that is absolute, has `..`/empty segments or control characters."""

    status, code = 400, "invalid_content_path"


class InvalidFilenameError(ApiError):
    """A worker's file name that could leave its source's content path."""

    status, code = 400, "invalid_filename"


class InvalidScheduleError(ApiError):
    status, code = 400, "invalid_schedule"


class InvalidCookiesError(ApiError):
    status, code = 400, "invalid_cookies"


class SourceNotFoundError(ApiError):
    status, code = 404, "source_not_found"


class SourceExistsError(ApiError):
    status, code = 409, "source_exists"


class SourceDisabledError(ApiError):
    status, code = 409, "source_disabled"


class OrderNotFoundError(ApiError):
    """No sync order of this source has that id (a typo, or another source's order)."""

    status, code = 404, "order_not_found"


# The event stream and webhooks (app/stream/).


class InvalidEventIdError(ApiError):
    """A Last-Event-ID (or ?since=) that is no sequence of this event log."""

    status, code = 400, "invalid_event_id"


class TooManyStreamsError(ApiError):
    """This app process has events.max_streams event streams open; try again shortly."""

    status, code = 503, "too_many_streams"


class WebhookNotFoundError(ApiError):
    status, code = 404, "webhook_not_found"


class DeadLetterNotFoundError(ApiError):
    status, code = 404, "dead_letter_not_found"


# Storage status (app/storage/, /api/storage, `distleech storage check`).


class StorageRootNotFoundError(ApiError):
    """No content root or ingest volume has that name (the reason lists the known ones)."""

    status, code = 404, "storage_root_not_found"


# Sync orders: who may report on a round and renew its lease (app/sources/dispatch.py).


class NotOrderHolderError(ApiError):
    """File reports for a round of a sync order the caller never leased (nor an admin)."""

    status, code = 403, "not_order_holder"


class LeaseNotHeldError(ApiError):
    """A lease renewal from a worker that does not hold the order now (it expired, was
    handed on, or the order ended): its results are still taken; it cannot extend it."""

    status, code = 409, "lease_not_held"
