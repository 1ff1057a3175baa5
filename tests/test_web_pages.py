"""The web UI's skeleton: security headers, login, logout, register, assets, error pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.accounts.auth import add_user
from app.accounts.invites import create_invite
from app.accounts.sessions import CSRF_FIELD, SESSION_COOKIE

PASSWORD = "correct horse battery"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TEMPLATES = Path(__file__).resolve().parent.parent / "app" / "web" / "templates"


@pytest.fixture
def alice(db, clock):
    add_user(db, "alice", PASSWORD, admin=False, actor="test", now=clock())
    return "alice"


def log_in(client, name="alice", password=PASSWORD, **extra):
    return client.post("/login", data={"name": name, "password": password, **extra})


def csrf_token_of(html: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found[1]


def session_cookie_header(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(SESSION_COOKIE)]
    assert len(cookies) == 1
    return cookies[0]


def assert_security_headers(response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_security_headers_on_pages_api_errors_and_assets(client):
    assert_security_headers(client.get("/login"))
    assert_security_headers(client.get("/api/status"))
    assert_security_headers(client.get("/no/such/page", headers=BROWSER))
    with client.get("/assets/htmx.min.js") as asset:  # a file: close it
        assert_security_headers(asset)


def test_login_page_has_a_title_landmarks_and_labelled_fields(client):
    response = client.get("/login")
    assert response.status_code == 200
    html = response.text
    assert "<title>Log in · distleech</title>" in html
    assert '<main id="main"' in html and 'href="#main"' in html  # the skip link
    assert '<label for="name">' in html and 'id="name"' in html
    assert '<label for="password">' in html and 'type="password"' in html
    assert 'aria-live="assertive"' in html


def test_wrong_password_shows_the_error_in_words_and_sets_no_cookie(client, alice):
    response = log_in(client, password="not the password")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert 'value="alice"' in response.text  # the name is kept, the password is not
    assert "not the password" not in response.text
    assert "X-AUTHENTICATION" not in response.text  # the API's advice to scripts
    assert "WWW-Authenticate" not in response.headers  # no basic-auth dialog
    assert not any(c.startswith(SESSION_COOKIE) for c in response.headers.getlist("Set-Cookie"))


def test_too_many_failures_answer_429_with_retry_after(make_app, alice):
    client = make_app(auth={"login_failures_per_account": 2}).test_client()
    for _ in range(2):
        assert log_in(client, password="wrong password").status_code == 401
    response = log_in(client)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many failed logins" in response.text


def test_login_sets_a_session_cookie_and_goes_to_the_dashboard(client, alice):
    response = log_in(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    cookie = session_cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie

    home = client.get("/")
    assert home.status_code == 200
    assert "<h1>Dashboard</h1>" in home.text and "alice" in home.text
    assert 'href="/admin"' not in home.text  # a member sees no admin link


def test_admins_see_the_admin_link(client, admin_auth):
    assert log_in(client, name="root").status_code == 303
    assert 'href="/admin"' in client.get("/").text


def test_anonymous_dashboard_redirects_to_login_and_back(client, alice):
    response = client.get("/")
    assert response.status_code in (302, 303)
    assert response.headers["Location"] == "/login?next=%2F"

    form = client.get("/login?next=%2F").text
    assert 'name="next" value="/"' in form
    assert log_in(client, next="/").headers["Location"] == "/"


@pytest.mark.parametrize(
    "target", ["//evil.example", "https://evil.example/", "/\\evil.example", "/\t/evil.example"]
)
def test_next_never_leads_to_another_site(client, alice, target):
    response = log_in(client, next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_a_local_next_is_followed(client, alice):
    assert log_in(client, next="/torrents?page=2").headers["Location"] == "/torrents?page=2"


def test_logout_needs_the_csrf_token_and_ends_the_session(client, alice):
    log_in(client)
    refused = client.post("/logout", data={})
    assert refused.status_code == 403
    assert "Reload the page" in refused.text
    assert client.get("/").status_code == 200  # still logged in

    token = csrf_token_of(client.get("/").text)
    response = client.post("/logout", data={CSRF_FIELD: token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert client.get("/").headers["Location"] == "/login?next=%2F"


def test_a_logged_out_cookie_no_longer_works(app, alice):
    first = app.test_client()
    log_in(first)
    cookie = first.get_cookie(SESSION_COOKIE).value
    first.post("/logout", data={CSRF_FIELD: csrf_token_of(first.get("/").text)})

    copied = app.test_client()
    copied.set_cookie(SESSION_COOKIE, cookie)
    assert copied.get("/").headers["Location"] == "/login?next=%2F"
    assert copied.get("/login").status_code == 200  # a stale cookie is just logged out


def test_register_with_an_invite_creates_the_member_and_logs_them_in(client, db, clock):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    form = client.get(f"/register?invite={secret}")
    assert form.status_code == 200
    assert f'value="{secret}"' in form.text
    assert "A password needs at least 8 characters" in form.text
    assert '<label for="password_again">' in form.text

    response = client.post(
        "/register",
        data={"invite": secret, "name": "bob", "password": PASSWORD, "password_again": PASSWORD},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert "HttpOnly" in session_cookie_header(response)
    assert db.get("user:bob")["role"] == "member"
    assert "bob" in client.get("/").text


def test_register_with_a_used_invite_shows_why(client, db, clock):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    fields = {"invite": secret, "password": PASSWORD, "password_again": PASSWORD}
    assert client.post("/register", data={**fields, "name": "bob"}).status_code == 303

    again = client.application.test_client().post("/register", data={**fields, "name": "carol"})
    assert again.status_code == 400
    assert "This invite has been used" in again.text
    assert 'value="carol"' in again.text


def test_register_with_a_taken_name_is_409(client, db, clock, alice):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    data = {"invite": secret, "name": "alice", "password": PASSWORD, "password_again": PASSWORD}
    response = client.post("/register", data=data)
    assert response.status_code == 409
    assert "is taken" in response.text


def test_register_with_mismatched_passwords_is_400_and_keeps_the_invite_open(client, db, clock):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    data = {"invite": secret, "name": "bob", "password": PASSWORD, "password_again": "other one"}
    response = client.post("/register", data=data)
    assert response.status_code == 400
    assert "The two passwords differ" in response.text
    assert db.get_or_none("user:bob") is None


def test_register_with_a_short_password_says_the_rule(client, db, clock):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    data = {"invite": secret, "name": "bob", "password": "short", "password_again": "short"}
    response = client.post("/register", data=data)
    assert response.status_code == 400
    assert "at least 8 characters" in response.text


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [
        ("htmx.min.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    ],
)
def test_vendored_assets_are_served_with_their_type_and_cached(client, name, mimetype):
    with client.get(f"/assets/{name}") as response:
        assert response.status_code == 200
        assert response.mimetype == mimetype
        assert "public" in response.headers["Cache-Control"]
        assert "max-age=86400" in response.headers["Cache-Control"]
        assert len(response.data) > 1000


@pytest.mark.parametrize("name", ["nope.js", "..%2Fpackage.json", "htmx.js"])
def test_unknown_assets_are_404(client, name):
    assert client.get(f"/assets/{name}").status_code == 404


def test_own_static_files_are_served(client):
    with client.get("/static/web/site.css") as css, client.get("/static/web/site.js") as js:
        assert css.mimetype == "text/css"
        assert js.status_code == 200 and "javascript" in js.mimetype


def test_unknown_url_is_an_html_page_for_browsers_and_json_for_scripts(client):
    page = client.get("/no/such/page", headers=BROWSER)
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert "<title>Not Found · distleech</title>" in page.text
    assert "Traceback" not in page.text

    api = client.get("/no/such/page")
    assert api.status_code == 404
    assert api.get_json()["error"] == "not_found"
    assert client.get("/api/nothing", headers=BROWSER).get_json()["error"] == "not_found"


def test_no_page_carries_inline_scripts_or_styles(client, db, clock, alice):
    secret, _ = create_invite(db, inviter="cli:test", role="member", days=7, now=clock())
    pages = [
        client.get("/login").text,
        client.get(f"/register?invite={secret}").text,
        client.get("/nowhere", headers=BROWSER).text,
        log_in(client, password="wrong password").text,
    ]
    log_in(client)
    pages.append(client.get("/").text)
    for html in pages:
        assert "<script" in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline <script>"
        assert not re.search(r"\sstyle=|<style", html), "an inline style"
        assert not re.search(r"\son[a-z]+=", html), "an inline event handler"


def test_templates_have_no_inline_scripts_or_styles():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)|\sstyle=|<style|\son[a-z]+=", text), template


def test_a_missing_vendored_file_is_a_404_and_a_warning(client, monkeypatch, tmp_path, caplog):
    from app.web import assets

    monkeypatch.setattr(assets, "NODE_MODULES", tmp_path)  # as if npm install never ran
    response = client.get("/assets/htmx.min.js")
    assert response.status_code == 404
    assert "npm install" in caplog.text


def test_role_required_pages_refuse_other_roles_with_a_403_page(app, alice, admin_auth):
    from app.web.pages import page_blueprint, role_required

    bp = page_blueprint("test_roles", __name__)

    @bp.get("/test/uploads")
    @role_required("uploader")
    def uploads():
        return "for uploaders"

    @bp.get("/test/boom")
    def boom():
        raise RuntimeError("secret detail")

    app.register_blueprint(bp)
    client = app.test_client()
    assert client.get("/test/uploads").headers["Location"] == "/login?next=%2Ftest%2Fuploads"

    log_in(client)
    refused = client.get("/test/uploads")
    assert refused.status_code == 403
    assert "This page is for: uploader." in refused.text and refused.mimetype == "text/html"

    broken = client.get("/test/boom")  # an unexpected error: words, never a stack trace
    assert broken.status_code == 500
    assert "Something went wrong" in broken.text
    assert "secret detail" not in broken.text and "Traceback" not in broken.text

    admin = app.test_client()
    log_in(admin, name="root")
    assert admin.get("/test/uploads").text == "for uploaders"
