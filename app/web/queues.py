"""Admin pages for the work queues: leases, CSV import, the archive queue.

Each form calls the operation the API and the CLI call, with the same rule
(admins only): releasing a lease (app/queues/leases.py, POST
/api/admin/release, `distleech lease release`), importing an inventory
(app/queues/imports.py around the import of POST /api/admin/import-csv),
queueing and retrying URLs (app/queues/archive.py, POST /api/worker/queue
and /api/worker/retry, `distleech lease queue-url|retry`).

After a change the browser is sent back (303) with `done=<what>&item=<id>`;
the page words the confirmation itself, so a crafted link cannot put text of
its choosing on the page. Errors come back as the page with the error in
words and its 4xx status.
"""

from __future__ import annotations

import re
import tempfile
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, request, url_for

from app.accounts.auth import ADMIN
from app.api.web import context
from app.errors import ApiError, MissingFieldError, NotFoundError, ValidationFailedError
from app.queues import archive, imports, leases
from app.web.pages import (
    check_form_csrf,
    page_blueprint,
    page_reason,
    render_page,
    role_required,
    see_other,
)

bp = page_blueprint("queue_pages", __name__)

# What a redirect's `done` says, with the item's id put in: the only words it can show.
CONFIRMATIONS = {
    "released": "Released {item}: it is ready in its queue again.",
    "retried": "Task {item} is queued again.",
    "not_retried": "Task {item} is not failed, so nothing was changed.",
    "queued": "Queued as task {item}.",
    "already_queued": "That URL is waiting already, as task {item}; nothing was added.",
}
ARCHIVE_MODES = ((0, "0: archive"), (1, "1: re-archive"))


# The item a confirmation names: a task id or an aggregate id, never free text.
CONFIRMED_ITEM = re.compile(r"^(?:\d{1,20}|(?:album|dltask|urltask):[\w.:-]{1,120})$")


def _confirmation() -> str:
    words = CONFIRMATIONS.get(request.args.get("done", ""))
    item = request.args.get("item", "")
    return words.format(item=item) if words and CONFIRMED_ITEM.match(item) else ""


def _page(template: str, title: str, error: ApiError | None = None, **page: Any) -> Response:
    """The page, with the error in words and its status (200 without one); never cached."""
    html = render_page(
        template,
        title=title,
        error=page_reason(error.code, error.reason) if error else "",
        confirmation="" if error else _confirmation(),
        **page,
    )
    response = current_app.response_class(html, status=error.status if error else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- leases


@bp.get("/admin/queues")
@role_required(ADMIN)
def leases_page() -> Response:
    """What every queue has leased now, with holders and expiry, and a Release button each."""
    return _leases_page()


def _leases_page(error: ApiError | None = None) -> Response:
    ctx = context()
    groups = leases.list_leases(ctx.db, ctx.clock())
    return _page("queues/leases.html", "Leases", error, groups=groups)


@bp.post("/admin/queues/release")
@role_required(ADMIN)
def release() -> Response:
    """Release one item's lease now: it is ready again at once (404 if it is not leased)."""
    admin = check_form_csrf()
    ctx = context()
    try:
        item_id = leases.check_item_id(request.form.get("id"))
        reason = leases.check_release_reason(request.form.get("reason"))
        leases.release_lease(ctx.db, item_id, actor=admin.holder, now=ctx.clock(), reason=reason)
    except (ValidationFailedError, NotFoundError) as error:
        return _leases_page(error)
    return see_other(url_for(".leases_page", done="released", item=item_id))


# ---------------------------------------------------------------- import


@bp.get("/admin/import")
@role_required(ADMIN)
def import_form() -> Response:
    """The inventory upload form."""
    return _page("queues/import.html", "Import an inventory")


@bp.post("/admin/import")
@role_required(ADMIN)
def import_upload() -> Response:
    """Start importing the uploaded CSV in the background and show its progress.

    400 when no file is chosen or it lacks the required columns (nothing is
    written then); 413 over `server.max_upload_bytes`.
    """
    admin = check_form_csrf()
    ctx = context()  # the body may reach server.max_upload_bytes: app/api allow_large_uploads
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        error = MissingFieldError("Choose a CSV file to upload.", field="file")
        return _page("queues/import.html", "Import an inventory", error)
    # a copy the import owns: the upload goes away with the request (an unnamed
    # temporary file also goes away should the process die)
    copy = tempfile.TemporaryFile()
    upload.save(copy)
    size = copy.tell()
    copy.seek(0)
    try:
        import_id = imports.start_import(
            ctx.db,
            copy,
            file_name=upload.filename,
            total_bytes=size,
            actor=admin.holder,
            clock=ctx.clock,
        )
    except ApiError as error:
        copy.close()
        return _page("queues/import.html", "Import an inventory", error)
    return see_other(url_for(".import_progress", import_id=import_id))


@bp.get("/admin/import/<import_id>")
@role_required(ADMIN)
def import_progress(import_id: str) -> Response:
    """An import's progress; htmx asks for the progress part alone every second."""
    ctx = context()
    progress = imports.get_import(ctx.db, import_id, ctx.clock())
    if progress is None:
        raise NotFoundError("No import has this address; start one from the import page.")
    if request.headers.get("HX-Request") == "true":
        html = render_page("queues/_progress.html", title="Import", progress=progress)
        response = current_app.response_class(html)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "HX-Request"
        return response
    response = _page("queues/import_progress.html", "Import progress", progress=progress)
    response.headers["Vary"] = "HX-Request"
    return response


# ---------------------------------------------------------------- archive queue


def _state_filter() -> str | None:
    state = request.args.get("state") or None
    return state if state in archive.STATES else None


@bp.get("/admin/archive")
@role_required(ADMIN)
def archive_page() -> Response:
    """Queued URLs with mode, state, attempts, holder and last failure; a filter by state."""
    return _archive_page()


def _archive_page(error: ApiError | None = None, url: str = "", mode: int = 0) -> Response:
    ctx = context()
    state = _state_filter()
    tasks = [leases.url_task_row(doc) for doc in archive.list_tasks(ctx.db, state)]
    return _page(
        "queues/archive.html",
        "Archive queue",
        error,
        tasks=tasks,
        counts=archive.count_by_state(ctx.db),
        states=archive.STATES,
        state=state,
        modes=ARCHIVE_MODES,
        url=url,
        mode=mode,
    )


def _back_to_archive(**params: Any) -> Response:
    state = request.form.get("state") or ""
    shown = {"state": state} if state in archive.STATES else {}
    return see_other(url_for(".archive_page") + "?" + urlencode({**shown, **params}))


@bp.post("/admin/archive/retry")
@role_required(ADMIN)
def retry() -> Response:
    """Queue a failed task again (a new round); 404 for an unknown task."""
    admin = check_form_csrf()
    ctx = context()
    try:
        task_id = archive.check_task_id(request.form.get("id", ""))
        report = archive.retry_task(ctx.db, task_id, actor=admin.holder, now=ctx.clock())
    except ApiError as error:
        return _archive_page(error)
    return _back_to_archive(done="retried" if report["recorded"] else "not_retried", item=task_id)


@bp.post("/admin/archive/queue")
@role_required(ADMIN)
def queue() -> Response:
    """Queue a URL with a mode, as POST /api/worker/queue does; a waiting URL is not doubled."""
    admin = check_form_csrf()
    ctx = context()
    url = request.form.get("url", "")
    try:
        if not url.strip():
            raise MissingFieldError("Enter the URL to archive.", field="url")
        checked = archive.check_url(url)
        mode = archive.check_mode(request.form.get("mode"))
        result = archive.queue_url(ctx.db, checked, mode, actor=admin.holder, now=ctx.clock())
    except ApiError as error:
        return _archive_page(error, url=url[: archive.MAX_URL_CHARS + 1])
    return _back_to_archive(done=result.status, item=result.task["id"])
