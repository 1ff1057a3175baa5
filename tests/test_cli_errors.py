"""Every command that meets an unreachable or silent CouchDB says so in one line.

A timeout or a refused connection is something an operator meets (a server
still starting, an index still building), not a bug: it must read like every
other CLI error, `Error: <code>: <reason>`, exit 1, show no traceback and no
credential.
"""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.processes.bundled import free_port
from tests.conftest import write_csv

SECRET = "pw-in-the-url-7f3"
ENV_SECRET = "pw-in-the-env-9c1"

COMMANDS = [
    ["init"],
    ["import-csv", "{csv}"],
    ["user", "add", "bob", "--password-stdin"],
    ["user", "passwd", "bob", "--password-stdin"],
    ["token", "add", "--role", "worker", "w1"],
    ["token", "list"],
    ["token", "revoke", "w1"],
    ["rebuild"],
    ["rebuild", "--check"],
    ["stats"],
    ["stats", "--json"],
    ["tracker", "user", "add", "carol"],
    ["tracker", "user", "show", "1"],
    ["tracker", "whitelist", "list"],
    ["tracker", "whitelist", "add", "-qB", "qBittorrent"],
    ["tracker", "torrent", "add", "a" * 40],
]


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers: every read times out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def invoke(tmp_path, url, args, **env):
    csv = write_csv(tmp_path / "albums.csv", [("Cockburn, Bruce", "Humans")])
    environ = {
        "DISTLEECH_CONFIG": str(tmp_path / "absent.yaml"),
        "DISTLEECH_COUCHDB__URL": url,
        "DISTLEECH_COUCHDB__TIMEOUT_SECONDS": "0.3",
        **env,
    }
    args = [arg.replace("{csv}", str(csv)) for arg in args]
    return CliRunner().invoke(main, args, env=environ, input="password123\n")


def assert_one_line_error(result, code):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught error
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {code}: "), result.output


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_refused_connection_is_one_line(tmp_path, args):
    result = invoke(tmp_path, f"http://127.0.0.1:{free_port()}", args)
    assert_one_line_error(result, "database_unavailable")
    assert "Is it running" in result.output


@pytest.mark.parametrize(
    "args",
    [["init"], ["stats"], ["token", "add", "--role", "worker", "w1"], ["import-csv", "{csv}"]],
)
def test_a_timeout_is_one_line(tmp_path, silent_server, args):
    result = invoke(tmp_path, silent_server, args)
    assert_one_line_error(result, "database_unavailable")
    assert "timed out" in result.output


def test_no_credential_is_printed(tmp_path, silent_server):
    url = silent_server.replace("http://", f"http://admin:{SECRET}@")
    result = invoke(tmp_path, url, ["init"], DISTLEECH_COUCHDB__PASSWORD=ENV_SECRET)
    assert_one_line_error(result, "database_unavailable")
    assert "admin" not in result.output or "***@" in result.output
    assert SECRET not in result.output and ENV_SECRET not in result.output


def test_a_domain_error_is_still_its_own_code(tmp_path, db):
    # a name that breaks the rules reaches the domain, which answers with its code
    args = ["token", "add", "--role", "worker", "bad name!"]
    result = invoke(tmp_path, db.server_url, args, DISTLEECH_COUCHDB__DATABASE=db.name)
    assert_one_line_error(result, "validation_failed")
