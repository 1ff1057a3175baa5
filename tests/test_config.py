"""Settings: defaults < config.yaml < DISTLEECH_* environment < test config, validated."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings, load_settings


def load(tmp_path, text=None, environ=None, test_config=None):
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    return load_settings(test_config, config_path=path, environ=environ or {})


def test_defaults_without_file_or_environment(tmp_path):
    settings = load(tmp_path)
    assert settings == Settings()
    assert (settings.leases.metadata_minutes, settings.leases.max_rows) == (60, 100)
    assert settings.auth.anonymous_workers is False


def test_each_layer_overrides_the_one_below(tmp_path):
    text = "leases:\n  metadata_minutes: 30\n  retry_minutes: 5\n  max_rows: 50\n"
    environ = {"DISTLEECH_LEASES__RETRY_MINUTES": "7", "DISTLEECH_LEASES__MAX_ROWS": "20"}
    settings = load(tmp_path, text, environ, {"leases": {"max_rows": 10}})
    leases = settings.leases
    assert (leases.metadata_minutes, leases.retry_minutes, leases.max_rows) == (30, 7, 10)
    assert leases.download_days == 14  # untouched keys keep their defaults


def test_environment_values_are_json_typed(tmp_path):
    environ = {
        "DISTLEECH_AUTH__ANONYMOUS_WORKERS": "true",
        "DISTLEECH_SERVER__PORT": "8080",
        "DISTLEECH_COUCHDB__URL": "http://couch.example:5984",
        "DISTLEECH_LEASE_SLOT": "3",  # not a settings key: no "__"
        "OTHER_SERVER__PORT": "1",
    }
    settings = load(tmp_path, environ=environ)
    assert settings.auth.anonymous_workers is True
    assert settings.server.port == 8080
    assert settings.couchdb.url == "http://couch.example:5984"


def test_a_string_setting_keeps_a_value_that_looks_like_json(tmp_path):
    environ = {"DISTLEECH_COUCHDB__DATABASE": "null", "DISTLEECH_SERVER__HOST": "1234"}
    settings = load(tmp_path, environ=environ)
    assert (settings.couchdb.database, settings.server.host) == ("null", "1234")


def test_numbers_get_their_declared_type(tmp_path):
    settings = load(tmp_path, "server:\n  port: 6000.0\nleases:\n  metadata_minutes: 30\n")
    assert settings.server.port == 6000 and isinstance(settings.server.port, int)
    assert isinstance(settings.leases.metadata_minutes, float)


def test_secrets_come_from_the_environment_as_strings(tmp_path):
    environ = {"DISTLEECH_COUCHDB__USERNAME": "admin", "DISTLEECH_COUCHDB__PASSWORD": "1234"}
    settings = load(tmp_path, environ=environ)
    assert (settings.couchdb.username, settings.couchdb.password) == ("admin", "1234")


@pytest.mark.parametrize("key", ["password", "username"])
def test_a_secret_in_the_file_is_refused(tmp_path, key):
    with pytest.raises(ConfigError, match=f"couchdb.{key}"):
        load(tmp_path, f"couchdb:\n  {key}: hunter22\n")


@pytest.mark.parametrize(
    ("text", "environ", "test_config", "key"),
    [
        ("leases:\n  max_rows: 0\n", {}, None, "leases.max_rows"),
        ("leases:\n  max_rows: many\n", {}, None, "leases.max_rows"),
        ("", {"DISTLEECH_LEASES__METADATA_MINUTES": "-5"}, None, "leases.metadata_minutes"),
        ("", {"DISTLEECH_SERVER__PORT": "70000"}, None, "server.port"),
        ("", {}, {"scheduler": {"enabled": "yes"}}, "scheduler.enabled"),
        ("couchdb:\n  database: Bad Name\n", {}, None, "couchdb.database"),
        ("leases:\n  bogus: 1\n", {}, None, "bogus"),
        ("bogus_section: {}\n", {}, None, "bogus_section"),
        ("leases: 5\n", {}, None, "leases"),
        ("couchdb: 5\n", {}, None, "couchdb"),
        ("", {"DISTLEECH_LEASES__METADATA_MINUTES": "0"}, None, "leases.metadata_minutes"),
        ("", {"DISTLEECH_AUTH__ANONYMOUS_WORKERS": "1"}, None, "auth.anonymous_workers"),
    ],
)
def test_a_bad_value_fails_naming_its_key(tmp_path, text, environ, test_config, key):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text, environ, test_config)
    assert key in str(error.value)


@pytest.mark.parametrize("text", ["leases: [1\n", "- a\n- b\n"])
def test_a_broken_file_fails_naming_the_file(tmp_path, text):
    with pytest.raises(ConfigError, match="config.yaml"):
        load(tmp_path, text)


def test_an_empty_file_means_defaults(tmp_path):
    assert load(tmp_path, "# nothing here\n") == Settings()


def test_settings_are_frozen(tmp_path):
    settings = load(tmp_path)
    with pytest.raises(AttributeError):
        settings.leases.max_rows = 5  # type: ignore[misc]


def test_config_path_comes_from_distleech_config(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("server:\n  port: 6000\n", encoding="utf-8")
    monkeypatch.setenv("DISTLEECH_CONFIG", str(path))
    assert load_settings(environ={}).server.port == 6000
