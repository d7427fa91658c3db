"""Settings: a TOML file, overridden by `INSIGHTS_PROXY_<SECTION>__<KEY>` environment variables.

`load_settings` validates everything once into frozen objects and raises `ConfigError` with one
message per problem, each naming the key as `section.key`, the value (masked for secrets) and
what to do. Secrets are `SecretStr`, whose `repr` and `str` are masked, so a stray f-string or
traceback does not print them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from yarl import URL

from .errors import ConfigError

ENV_PREFIX = "INSIGHTS_PROXY_"
ENV_CONFIG_PATH = "INSIGHTS_PROXY_CONFIG"
DEFAULT_CONFIG_NAME = "insights-proxy.toml"
SECRET_KEYS = frozenset({"oauth.client_secret", "admin.token"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = "/query-api"
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    allowed_origins: tuple[str, ...] = ()
    allow_anonymous_network: bool = False
    max_body_bytes: int = Field(1_048_576, gt=0)
    max_url_bytes: int = Field(8192, ge=256)
    max_header_bytes: int = Field(16384, ge=1024)
    drain_timeout_s: float = Field(10.0, ge=0)


class QuerySettings(_Section):
    max_length: int = Field(65536, gt=0)
    max_depth: int = Field(20, gt=0)
    max_aliases: int = Field(50, ge=0)


class UpstreamSettings(_Section):
    url: str = "https://choreocontrolplane.choreo.dev/93tu/insights/1.0.0/query-api"
    timeout_s: float = Field(30.0, gt=0)
    # Open connections of the one client session, shared by the upstream, token and revoke URLs.
    max_connections: int = Field(256, gt=0)
    default_variables: dict[str, Any] = Field(default_factory=dict)


class OAuthSettings(_Section):
    token_url: str = "https://sts.choreo.dev/oauth2/token"
    revoke_url: str = "https://sts.choreo.dev/oauth2/revoke"
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    client_secret_file: str = ""
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    scope: str = ""
    extra_params: dict[str, str] = Field(default_factory=dict)
    refresh_margin_s: float = Field(60.0, ge=0)
    default_lifetime_s: float = Field(900.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)

    def identity(self) -> str:
        """Return a fingerprint of who the token is for; it contains no secret."""
        material = "\n".join([
            self.token_url,
            self.client_id,
            self.scope,
            *(f"{key}={value}" for key, value in sorted(self.extra_params.items())),
        ])
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def credential(self) -> str:
        """Return a fingerprint of identity plus secret, to notice a rotated secret."""
        secret = self.client_secret.get_secret_value().encode()
        return hashlib.sha256(self.identity().encode() + b"\n" + secret).hexdigest()[:16]


class CacheSettings(_Section):
    ttl_s: float = Field(30.0, ge=0)
    max_entries: int = Field(1000, ge=0)
    max_bytes: int = Field(67_108_864, ge=0)
    max_entry_bytes: int = Field(1_048_576, ge=0)
    stale_if_error_s: float = Field(0.0, ge=0)


class TLSSettings(_Section):
    ca_file: str = ""


class ClientSettings(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    requests_per_minute: int | None = Field(None, gt=0)


class AdminSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9901, ge=0, le=65535)
    token: SecretStr = SecretStr("")
    token_file: str = ""


class LogSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class Settings(BaseSettings):
    """The whole validated configuration; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    query: QuerySettings = QuerySettings()
    upstream: UpstreamSettings = UpstreamSettings()
    oauth: OAuthSettings = OAuthSettings()
    cache: CacheSettings = CacheSettings()
    tls: TLSSettings = TLSSettings()
    clients: tuple[ClientSettings, ...] = ()
    admin: AdminSettings = AdminSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML table arrives as init arguments; the environment must win over it.
        return (env_settings, init_settings)


class LoadedSettings:
    """Settings plus where they came from and the warnings found while loading them."""

    def __init__(self, settings: Settings, path: Path | None, warnings: list[str]) -> None:
        self.settings = settings
        self.path = path
        self.warnings = warnings


def resolve_config_path(cli_path: str | None) -> Path:
    """Find the configuration file: `--config`, then the environment, then the current folder."""
    if cli_path:
        return Path(cli_path)
    from_env = os.environ.get(ENV_CONFIG_PATH)
    if from_env:
        return Path(from_env)
    local = Path(DEFAULT_CONFIG_NAME)
    if local.exists():
        return local
    raise ConfigError([
        f"no configuration file: pass --config PATH, set ${ENV_CONFIG_PATH}, "
        f"or create ./{DEFAULT_CONFIG_NAME} (see config/insights-proxy.example.toml)"
    ])


def load_settings(path: Path | None) -> LoadedSettings:
    """Read, merge and validate the configuration; raise `ConfigError` on any problem."""
    raw = _read_toml(path) if path is not None else {}
    base = path.parent if path is not None else Path.cwd()
    settings = build_settings(raw, base=base)
    warnings = _check_file_permissions(path, raw) if path is not None else []
    return LoadedSettings(settings, path, warnings)


def build_settings(raw: dict[str, Any], *, base: Path | None = None,
                   use_environment: bool = True) -> Settings:
    """Validate a configuration table, applying environment overrides when `use_environment`."""
    if use_environment:
        unknown = _unknown_environment_names(os.environ)
        if unknown:
            raise ConfigError(unknown)
    try:
        settings = Settings(**raw) if use_environment else _with_environ({}, raw)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc)) from None
    except SettingsError as exc:
        raise ConfigError([_describe_environment_error(exc)]) from None
    base = base or Path.cwd()
    settings = _read_secret_files(settings, base)
    if settings.tls.ca_file and not Path(settings.tls.ca_file).is_absolute():
        tls = settings.tls.model_copy(update={"ca_file": str(base / settings.tls.ca_file)})
        settings = settings.model_copy(update={"tls": tls})
    problems = _check_consistency(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _unknown_environment_names(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Reject INSIGHTS_PROXY_ variables that name no key, so a typo is not silently ignored."""
    sections = {name.upper(): model for name, model in Settings.model_fields.items()}
    problems = []
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        section, separator, key = name[len(ENV_PREFIX):].partition("__")
        field = sections.get(section)
        annotation = getattr(field, "annotation", None)
        known_keys = getattr(annotation, "model_fields", None)
        if field is None or (separator and known_keys is not None
                             and key.lower() not in known_keys):
            problems.append(f"environment variable {name}: names no configuration key; use "
                            f"{ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}SERVER__PORT")
    return problems


def _describe_environment_error(exc: SettingsError) -> str:
    # pydantic-settings raises this when a list or table value is not valid JSON.
    return (f"an {ENV_PREFIX}* environment variable could not be parsed ({exc}); give lists "
            """and tables as JSON, e.g. INSIGHTS_PROXY_SERVER__ALLOWED_HOSTS='["localhost"]'""")


def _with_environ(environ: dict[str, str], raw: dict[str, Any]) -> Settings:
    saved = dict(os.environ)
    try:
        for key in [key for key in os.environ if key.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(environ)
        return Settings(**raw)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"configuration file {str(path)!r} not found; check the path"]) from None
    except PermissionError:
        raise ConfigError([
            f"configuration file {str(path)!r} is not readable by this user; fix its permissions"
        ]) from None
    except IsADirectoryError:
        raise ConfigError([f"configuration file {str(path)!r} is a directory; give the path "
                           "of a TOML file"]) from None
    except OSError as exc:
        raise ConfigError([f"configuration file {str(path)!r} cannot be read "
                           f"({exc.strerror or exc}); check the path"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"configuration file {str(path)!r} is not UTF-8 text; save it as "
                           "UTF-8"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"configuration file {str(path)!r} is not valid TOML: {exc}"]) from None


def _describe_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        section_key = ".".join(str(part) for part in error["loc"][:2])
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key; check its spelling against "
                            "config/insights-proxy.example.toml")
            continue
        value = error.get("input")
        displayed = "'********'" if section_key in SECRET_KEYS else repr(value)
        problems.append(f"{key}: invalid value {displayed}: {error['msg']}")
    return problems


def _read_secret_files(settings: Settings, base: Path) -> Settings:
    problems: list[str] = []
    oauth, admin = settings.oauth, settings.admin
    if oauth.client_secret_file:
        if oauth.client_secret.get_secret_value():
            problems.append("oauth.client_secret_file: set together with oauth.client_secret; "
                            "keep only one of them")
        else:
            secret = _read_secret_file("oauth.client_secret_file", oauth.client_secret_file,
                                       base, problems)
            oauth = oauth.model_copy(update={"client_secret": SecretStr(secret)})
    if admin.token_file:
        if admin.token.get_secret_value():
            problems.append("admin.token_file: set together with admin.token; keep only one of them")
        else:
            secret = _read_secret_file("admin.token_file", admin.token_file, base, problems)
            admin = admin.model_copy(update={"token": SecretStr(secret)})
    if problems:
        raise ConfigError(problems)
    return settings.model_copy(update={"oauth": oauth, "admin": admin})


def _read_secret_file(key: str, name: str, base: Path, problems: list[str]) -> str:
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{key}: cannot read {str(path)!r} ({exc.strerror or exc}); "
                        "check the path and its permissions")
        return ""
    except UnicodeDecodeError:
        problems.append(f"{key}: {str(path)!r} is not UTF-8 text; write the secret as plain "
                        "UTF-8 text")
        return ""
    if not secret:
        problems.append(f"{key}: {str(path)!r} is empty; write the secret into it")
    return secret


def _check_consistency(settings: Settings) -> list[str]:
    problems: list[str] = []
    server, oauth, admin = settings.server, settings.oauth, settings.admin

    if not server.path.startswith("/") or "?" in server.path or "#" in server.path:
        problems.append(f"server.path: invalid value {server.path!r}; use an absolute path "
                        "such as '/query-api'")
    if not oauth.client_id:
        problems.append("oauth.client_id: missing; set the consumer key of your Choreo "
                        f"application (or {ENV_PREFIX}OAUTH__CLIENT_ID)")
    if not oauth.client_secret.get_secret_value():
        problems.append("oauth.client_secret: missing; set oauth.client_secret_file, "
                        f"oauth.client_secret or {ENV_PREFIX}OAUTH__CLIENT_SECRET")

    for key, url in (("upstream.url", settings.upstream.url), ("oauth.token_url", oauth.token_url),
                     ("oauth.revoke_url", oauth.revoke_url)):
        problem = _check_url(key, url)
        if problem:
            problems.append(problem)

    if not is_loopback_host(server.host) and not settings.clients \
            and not server.allow_anonymous_network:
        problems.append(
            f"server.host: {server.host!r} is not a loopback address, so anyone on the network "
            "could use the proxy's token; add [[clients]] keys, or set "
            "server.allow_anonymous_network = true if that is intended")
    if not is_loopback_host(admin.host) and not admin.token.get_secret_value():
        problems.append(f"admin.host: {admin.host!r} is not a loopback address; set admin.token "
                        "or admin.token_file so the admin routes need a bearer token")

    if settings.tls.ca_file:
        problem = _check_ca_file(settings.tls.ca_file)
        if problem:
            problems.append(problem)
    problems.extend(_check_browser_guards(server))

    names = [client.name for client in settings.clients]
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"clients.name: {name!r} is used by more than one [[clients]] entry; "
                        "give each client its own name")
    return problems


def _check_url(key: str, value: str) -> str | None:
    try:
        url = URL(value)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        return f"{key}: invalid URL {value!r}; use an absolute https:// URL"
    if url.scheme == "http" and not is_loopback_host(url.host):
        return (f"{key}: {value!r} uses plain http:// to a host that is not loopback, which "
                "would send the client secret and tokens in clear; use https://")
    return None


def _check_ca_file(name: str) -> str | None:
    if not Path(name).is_file():
        return f"tls.ca_file: {name!r} is not a file; give the path of a PEM bundle or leave it empty"
    try:
        ssl.create_default_context().load_verify_locations(cafile=name)
    except (ssl.SSLError, OSError) as exc:
        return (f"tls.ca_file: {name!r} cannot be loaded as a PEM bundle of CA certificates "
                f"({exc.strerror or exc}); check the file's content and permissions")
    return None


def _check_browser_guards(server: ServerSettings) -> list[str]:
    # Imported here because the security module imports this one.
    from .security import split_host

    problems = []
    for entry in server.allowed_hosts:
        if split_host(entry) is None:
            problems.append(f"server.allowed_hosts: invalid entry {entry!r}; use a host name, "
                            "an IPv4 address or a bracketed IPv6 address, optionally with "
                            "':port'")
    for entry in server.allowed_origins:
        try:
            url = URL(entry)
        except (ValueError, TypeError):
            url = None
        if (url is None or url.scheme not in ("http", "https") or not url.host
                or url.raw_path not in ("", "/") or url.query_string or url.fragment
                or url.user is not None):
            problems.append(f"server.allowed_origins: invalid origin {entry!r}; use "
                            "scheme://host[:port] such as 'http://localhost:3000' "
                            "('*' and 'null' are not accepted)")
    return problems


def load_admin_settings(path: Path) -> AdminSettings:
    """Read only the [admin] table (and its environment overrides) for the admin client.

    The admin client must work while an operator repairs another part of the configuration,
    such as a client secret file in the middle of a rotation.
    """
    raw = dict(_read_toml(path).get("admin", {}))
    prefix = f"{ENV_PREFIX}ADMIN__"
    for name, value in os.environ.items():
        if name.startswith(prefix):
            raw[name[len(prefix):].lower()] = value
    try:
        admin = AdminSettings(**raw)
    except ValidationError as exc:
        raise ConfigError([f"admin.{problem}" for problem in _describe_validation_error(exc)]) \
            from None
    problems: list[str] = []
    if admin.token_file and not admin.token.get_secret_value():
        token = _read_secret_file("admin.token_file", admin.token_file, path.parent, problems)
        admin = admin.model_copy(update={"token": SecretStr(token)})
    if problems:
        raise ConfigError(problems)
    return admin


def is_loopback_host(host: str) -> bool:
    """Tell whether a host name or address stays on this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_file_permissions(path: Path, raw: dict[str, Any]) -> list[str]:
    holds_secret = bool(raw.get("oauth", {}).get("client_secret")) or bool(
        raw.get("admin", {}).get("token"))
    if not holds_secret or os.name != "posix":
        return []
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return [f"configuration file {str(path)!r} holds a secret and is readable by other "
                f"users (mode {stat.filemode(mode)}); run: chmod 600 {path}"]
    return []
