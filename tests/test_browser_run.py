"""After `make run` (`distleech run`: the bundled server, gunicorn, the scheduler, the
tracker): the first admin from the command line, an invite, and both people in chromium."""

from __future__ import annotations

import re

from browser import log_in
from playwright.sync_api import expect
from run_process import distleech_run

PASSWORD = "first admin password"
MEMBER_PASSWORD = "a members password"


def test_a_new_site_first_admin_then_an_invited_member_in_a_browser(page, tmp_path):
    with distleech_run(tmp_path) as run:
        base = run.app_url
        run.wait_for(f"{base}/login")
        # the operator makes the first admin and an invite, as the banner says
        run.cli("user", "add", "root", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
        link = run.cli("invite", "create").strip()
        assert link.startswith(f"{base}/register?invite=")

        # the admin logs in; the dashboard's chart library and htmx came from the app
        log_in(page, base, "root", PASSWORD)
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        assert page.evaluate("typeof window.htmx") == "object"
        assert page.evaluate("typeof window.uPlot") == "function"
        page.get_by_role("button", name=re.compile(r"^Log out")).click()

        # the invited person registers through the link and has a passkey
        page.goto(link)
        page.get_by_label("Name").fill("erin")
        page.get_by_label("Password", exact=True).fill(MEMBER_PASSWORD)
        page.get_by_label("Password again").fill(MEMBER_PASSWORD)
        page.get_by_role("button", name="Register").click()
        expect(page).to_have_url(f"{base}/")
        page.get_by_role("link", name="Profile").click()
        expect(page.locator("#passkey-value")).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
        # a member sees no admin pages
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        page.goto(f"{base}/admin")
        expect(page.get_by_role("alert")).to_contain_text("This page is for: admin")
    assert run.process.returncode == 0, run.output
