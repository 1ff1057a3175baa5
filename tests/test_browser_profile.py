"""In chromium: an admin invites, the new member registers, rotates their passkey and
changes their password on /profile, and the admin disables them on /admin/people."""

from __future__ import annotations

import re

from browser import accept_dialogs, fits_the_width, log_in, screenshot
from playwright.sync_api import Page, expect

from app.accounts import people
from app.accounts.auth import add_user
from app.tracker import members

ADMIN_PASSWORD = "correct horse battery"
PASSWORD = "first tall mountain"
NEW_PASSWORD = "second tall mountain"


def log_out(page: Page) -> None:
    page.get_by_role("button", name=re.compile(r"^Log out")).click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def watch_csp(page: Page) -> list[str]:
    """Console messages about blocked scripts or styles: the pages must need none inline."""
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return blocked


def test_invite_register_rotate_change_password_then_disabled(page, live_server, db, clock):
    base, blocked = live_server.url, watch_csp(page)
    add_user(db, "root", ADMIN_PASSWORD, admin=True, actor="test", now=clock())

    # the admin creates an invite on their profile; the link is shown once
    log_in(page, base, "root", ADMIN_PASSWORD)
    page.goto(f"{base}/profile")
    expect(page).to_have_title("Your profile · distleech")
    page.get_by_label("Role of the new person").select_option("member")
    page.get_by_role("button", name="Create an invite link").click()
    link = page.get_by_label("Registration link").input_value()
    assert link.startswith(f"{base}/register?invite=")
    log_out(page)

    # the new person registers through the link and lands logged in
    page.goto(link)
    page.get_by_label("Name").fill("carol")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    expect(page).to_have_url(f"{base}/")

    # their profile shows their passkey; rotating it replaces it at the tracker too
    page.get_by_role("link", name="Profile").click()
    passkey = page.locator("#passkey-value")
    old = passkey.inner_text()
    assert old == people.get_passkey(db, "carol")
    expect(page.get_by_label("Announce URL")).to_have_value(
        re.compile(f"/announce\\?passkey={old}$")
    )
    page.get_by_role("button", name="Replace my passkey").click()
    expect(page.get_by_role("status")).to_contain_text("Your passkey was replaced")
    new = passkey.inner_text()
    assert new != old
    assert members.find_user_by_passkey(db, old) is None
    assert members.find_user_by_passkey(db, new)["name"] == "carol"

    # a password change keeps them logged in; the new password logs in afterwards
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change my password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password was changed")
    expect(page).to_have_title("Your profile · distleech")
    screenshot(page, "profile")
    log_out(page)
    log_in(page, base, "carol", NEW_PASSWORD)

    # the admin, in another browser, disables carol on /admin/people
    admin = page.context.browser.new_context(viewport=page.viewport_size).new_page()
    accept_dialogs(admin)
    try:
        blocked += watch_csp(admin)
        log_in(admin, base, "root", ADMIN_PASSWORD)
        admin.get_by_role("link", name="Admin").click()
        admin.get_by_role("link", name="People and invites").click()
        expect(admin).to_have_title("People and invites · distleech")
        admin.get_by_role("button", name="Disable carol").click()
        expect(admin.get_by_role("status")).to_contain_text("Disabled")
        expect(admin.locator("#person-carol")).to_contain_text("disabled")
        screenshot(admin, "admin-people")
    finally:
        admin.context.close()

    # carol's next page load asks her to log in
    page.goto(f"{base}/profile")
    expect(page).to_have_url(f"{base}/login?next=%2Fprofile")
    assert blocked == []


def test_the_profile_fits_a_phone_screen(page, live_server, db, clock):
    add_user(db, "root", ADMIN_PASSWORD, admin=True, actor="test", now=clock())
    people.issue_passkey(db, "root", actor="test", now=clock())
    page.set_viewport_size({"width": 375, "height": 667})
    log_in(page, live_server.url, "root", ADMIN_PASSWORD)
    page.goto(f"{live_server.url}/profile")
    page.get_by_role("button", name="Create an invite link").click()  # a link and a table
    expect(page.get_by_label("Registration link")).to_be_visible()
    assert fits_the_width(page)
