"""Browser tests: Playwright driving Debian's chromium against the app served
over real HTTP (a pytest plugin, loaded by conftest.py's `pytest_plugins`).

Playwright only ever launches the system browser by its path (`make test`
installs the Debian package `chromium` as root); it never downloads one. As
root (CI) a missing chromium fails the tests, elsewhere they skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"

# Headless and quiet: the tests run in a network namespace with only loopback,
# and without the background-networking flags chromium keeps calling home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root (CI) cannot use chromium's sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
CHROMIUM_MISSING = "chromium is not installed (make test installs the Debian package as root)"

FAILED = pytest.StashKey[bool]()


@dataclass(frozen=True)
class LiveServer:
    """An app served over real HTTP: `url` is its base URL, without a trailing slash."""

    url: str
    app: Flask


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app served over real HTTP from a daemon thread on a free port; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def screenshot(page: Page, name: str) -> Path:
    """Take the whole page as <name>.png: the README's pictures in docs/screenshots/
    when DISTLEECH_SCREENSHOTS=1 (`DISTLEECH_SCREENSHOTS=1 make test` refreshes
    them), else in a temporary folder, so that a test run leaves the tree clean."""
    folder = SCREENSHOTS if os.environ.get("DISTLEECH_SCREENSHOTS") == "1" else _scratch()
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def _scratch() -> Path:
    return Path(tempfile.gettempdir()) / f"distleech-screenshots-{os.getpid()}"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; missing, the browser tests skip, or fail as root (CI)."""
    if path := shutil.which("chromium") or shutil.which("/usr/bin/chromium"):
        return path
    if os.geteuid() == 0:
        pytest.fail(f"{CHROMIUM_MISSING}; running as root, nothing may skip")
    pytest.skip(CHROMIUM_MISSING)


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Browser]:
    """One headless chromium per run; each test gets its own context (`page`).

    While it lives, Playwright's sync API marks its event loop as the main
    thread's running loop, so `asyncio.run()` in a later test of the run would
    refuse to start: in-process asyncio tests need a thread of their own.
    """
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def live_server_factory(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """Serve apps: `live_server_factory(**overrides)` takes make_app's config overrides
    (`scheduler={...}`, …); every server stops after the test."""
    with contextlib.ExitStack() as stack:

        def factory(**overrides: dict[str, object]) -> LiveServer:
            app = make_app(**overrides)
            return LiveServer(stack.enter_context(serving(app)), app)

        yield factory


@pytest.fixture
def live_server(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    """The test's app (make_app's defaults) served over real HTTP."""
    return live_server_factory()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh context (1280x800) and page per test; a failed test leaves a
    screenshot of it in its tmp_path (failure.png)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    accept_dialogs(page)
    try:
        yield page
        if request.node.stash.get(FAILED, False):
            with contextlib.suppress(Exception):  # a crashed page cannot spoil the report
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Tell `page`'s teardown whether the test itself failed."""
    report = yield
    if call.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


def accept_dialogs(page: Page) -> list[str]:
    """Say yes to the page's confirmations (as a person who meant to click); return
    the list their questions are collected in (the same list on every call)."""
    asked: list[str] | None = getattr(page, "distleech_dialogs", None)
    if asked is None:
        asked = []
        page.distleech_dialogs = asked

        def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept()

        page.on("dialog", answer)
    return asked


def log_in(page: Page, base: str, name: str, password: str, then: str = "/") -> None:
    """Log in through the real /login form, as a person does; the browser lands on `then`."""
    page.goto(f"{base}/login?next={quote(then, safe='/')}")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}{then}")


def fits_the_width(page: Page) -> bool:
    """Whether the page needs no sideways scrolling at the current viewport's width."""
    scroll, client = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    return bool(scroll <= client)
