"""Configuration: TOML, environment overrides, secret files and the errors for bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from proxy.config import ConfigError, load_settings, resolve_config_path

MINIMAL = """
[upstream]
url = "http://127.0.0.1:8090/93tu/insights/1.0.0/query-api"
[oauth]
token_url = "http://127.0.0.1:8090/oauth2/token"
revoke_url = "http://127.0.0.1:8090/oauth2/revoke"
client_id = "client-a"
client_secret_file = "secret.txt"
"""


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [key for key in os.environ if key.startswith("INSIGHTS_PROXY_")]:
        monkeypatch.delenv(key)
    (tmp_path / "secret.txt").write_text("file-secret-value\n")
    (tmp_path / "proxy.toml").write_text(MINIMAL)
    return tmp_path


def problems_of(path: Path) -> str:
    with pytest.raises(ConfigError) as failure:
        load_settings(path)
    return "\n".join(failure.value.problems)


def test_config_defaults_and_secret_file(config_dir):
    """Defaults match the contract, and the secret file is read without its newline."""
    settings = load_settings(config_dir / "proxy.toml").settings
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.path == "/query-api"
    assert settings.cache.ttl_s == 30
    assert settings.oauth.refresh_margin_s == 60
    assert settings.oauth.client_secret.get_secret_value() == "file-secret-value"
    assert "file-secret-value" not in repr(settings)


def test_config_environment_overrides_file(config_dir, monkeypatch):
    """INSIGHTS_PROXY_<SECTION>__<KEY> wins over the file, nested values included."""
    monkeypatch.setenv("INSIGHTS_PROXY_SERVER__PORT", "9090")
    monkeypatch.setenv("INSIGHTS_PROXY_OAUTH__EXTRA_PARAMS", '{"orgHandle": "acme"}')
    monkeypatch.setenv("INSIGHTS_PROXY_CACHE__TTL_S", "5")
    settings = load_settings(config_dir / "proxy.toml").settings
    assert settings.server.port == 9090
    assert settings.oauth.extra_params == {"orgHandle": "acme"}
    assert settings.cache.ttl_s == 5
    assert settings.oauth.client_id == "client-a"


@pytest.mark.parametrize(("addition", "expected"), [
    ("[server]\nport = 'eighty'", "server.port: invalid value 'eighty'"),
    ("[server]\nport = 70000", "server.port: invalid value 70000"),
    ("[server]\nhots = 'x'", "server.hots: unknown key"),
    ("[cache]\nttl_s = -1", "cache.ttl_s: invalid value -1"),
    ("[log]\nformat = 'xml'", "log.format: invalid value 'xml'"),
    ("[server]\nhost = '0.0.0.0'", "server.host: '0.0.0.0' is not a loopback address"),
    ("[admin]\nhost = '0.0.0.0'", "admin.host: '0.0.0.0' is not a loopback address"),
    ("[tls]\nca_file = '/nonexistent.pem'", "tls.ca_file: '/nonexistent.pem' is not a file"),
])
def test_config_errors_name_key_and_value(config_dir, addition, expected):
    """Each invalid value is reported as section.key with the value and what to do."""
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL + "\n" + addition + "\n")
    assert expected in problems_of(path)


def test_config_secret_value_masked_in_errors(config_dir):
    """A secret with a wrong type is reported without its value."""
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL.replace('client_secret_file = "secret.txt"',
                                    "client_secret = ['hunter2-secret']"))
    message = problems_of(path)
    assert "oauth.client_secret" in message
    assert "hunter2-secret" not in message


def test_config_plain_http_rejected_off_loopback(config_dir):
    """http:// is accepted only for loopback hosts, since secrets would travel in clear."""
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL.replace("http://127.0.0.1:8090/oauth2/token",
                                    "http://sts.example.com/oauth2/token"))
    assert "oauth.token_url: 'http://sts.example.com/oauth2/token' uses plain http://" \
        in problems_of(path)


def test_config_missing_secret_and_client_id(config_dir):
    """A missing client id or secret names the key and where to set it."""
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL.replace('client_id = "client-a"', "").replace(
        'client_secret_file = "secret.txt"', ""))
    message = problems_of(path)
    assert "oauth.client_id: missing" in message
    assert "oauth.client_secret: missing" in message


def test_config_unreadable_secret_file(config_dir):
    """A secret file that does not exist is named with its path."""
    (config_dir / "secret.txt").unlink()
    assert "oauth.client_secret_file: cannot read" in problems_of(config_dir / "proxy.toml")


def test_config_invalid_toml(config_dir):
    """A TOML syntax error names the file and the position."""
    path = config_dir / "proxy.toml"
    path.write_text("[server\nport = 1")
    assert "is not valid TOML" in problems_of(path)


def test_config_readable_secret_warns(config_dir):
    """A config file holding a secret and readable by others produces a warning."""
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL.replace('client_secret_file = "secret.txt"',
                                    'client_secret = "inline-secret-1"'))
    path.chmod(0o644)
    warnings = load_settings(path).warnings
    assert warnings and "chmod 600" in warnings[0]
    path.chmod(0o600)
    assert load_settings(path).warnings == []


def test_config_path_resolution(config_dir, monkeypatch):
    """--config wins, then $INSIGHTS_PROXY_CONFIG, then ./insights-proxy.toml, else an error."""
    monkeypatch.chdir(config_dir)
    with pytest.raises(ConfigError) as failure:
        resolve_config_path(None)
    message = failure.value.problems[0]
    assert "INSIGHTS_PROXY_CONFIG" in message
    assert "insights-proxy.toml" in message
    (config_dir / "insights-proxy.toml").write_text(MINIMAL)
    assert resolve_config_path(None) == Path("insights-proxy.toml")
    monkeypatch.setenv("INSIGHTS_PROXY_CONFIG", "from-env.toml")
    assert resolve_config_path(None) == Path("from-env.toml")
    assert resolve_config_path("cli.toml") == Path("cli.toml")


def test_config_credential_identity_has_no_secret(config_dir):
    """The identity fingerprint changes with the client id, not with the secret."""
    settings = load_settings(config_dir / "proxy.toml").settings
    rotated = settings.oauth.model_copy(update={"client_secret": SecretStr("other")})
    assert settings.oauth.identity() == rotated.identity()
    assert settings.oauth.credential() != rotated.credential()
    renamed = settings.oauth.model_copy(update={"client_id": "client-b"})
    assert settings.oauth.identity() != renamed.identity()


def test_example_config_lists_every_key_with_default():
    """The annotated example shows every key of every section with its default value."""
    import tomllib

    from proxy.config import Settings

    path = Path(__file__).parent.parent / "config" / "insights-proxy.example.toml"
    example = tomllib.loads(path.read_text())
    defaults = Settings.model_construct()
    for section, model in defaults:
        if section == "clients":
            continue
        for key, field in type(model).model_fields.items():
            assert key in example[section], f"{section}.{key} missing from the example"
            default = field.get_default(call_default_factory=True)
            value = example[section][key]
            if hasattr(default, "get_secret_value"):
                default = default.get_secret_value()
            if isinstance(default, tuple):
                value = tuple(value)
            assert value == default, f"{section}.{key}: example {value!r} != default {default!r}"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("INSIGHTS_PROXY_SERVR__PORT", "1", "INSIGHTS_PROXY_SERVR__PORT: names no configuration key"),
    ("INSIGHTS_PROXY_SERVER__PROT", "1", "INSIGHTS_PROXY_SERVER__PROT: names no configuration key"),
    ("INSIGHTS_PROXY_SERVER__ALLOWED_HOSTS", "localhost", "give lists and tables as JSON"),
])
def test_config_environment_mistakes_named(config_dir, monkeypatch, name, value, expected):
    """A misspelt or unparsable environment override is an error, not silently ignored."""
    monkeypatch.setenv(name, value)
    assert expected in problems_of(config_dir / "proxy.toml")


@pytest.mark.parametrize(("content", "expected"), [
    (b"x = \xff\n", "is not UTF-8 text"),
    (None, "is a directory"),
])
def test_config_unreadable_file_named(config_dir, content, expected):
    """A config file that is not UTF-8, or a directory, is a configuration error."""
    path = config_dir / "weird.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert expected in problems_of(path)


def test_config_secret_file_not_utf8(config_dir):
    """A secret file that is not UTF-8 text is named."""
    (config_dir / "secret.txt").write_bytes(b"\xff\xfe\n")
    assert "is not UTF-8 text" in problems_of(config_dir / "proxy.toml")


def test_config_relative_ca_file_beside_config(config_dir, monkeypatch, tmp_path_factory):
    """A relative tls.ca_file is read from the configuration file's folder."""
    import ssl
    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    (config_dir / "ca.pem").write_bytes(Path(ca).read_bytes())
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL + '\n[tls]\nca_file = "ca.pem"\n')
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    settings = load_settings(path).settings
    assert settings.tls.ca_file == str(config_dir / "ca.pem")


def test_admin_settings_ignore_broken_secret(config_dir):
    """The admin client reads only [admin], so a broken client secret file does not stop it."""
    from proxy.config import load_admin_settings

    (config_dir / "secret.txt").write_text("")
    (config_dir / "admin-token").write_text("admin-token-value-1\n")
    path = config_dir / "proxy.toml"
    path.write_text(MINIMAL + '\n[admin]\nport = 9911\ntoken_file = "admin-token"\n')
    admin = load_admin_settings(path)
    assert admin.port == 9911
    assert admin.token.get_secret_value() == "admin-token-value-1"
