#!/usr/bin/env python3
"""Probe a running insights-proxy from inside its container, for health checks and probes.

Usage:
    insights-proxy-probe healthz [--config PATH] [--timeout S]
    insights-proxy-probe readyz  [--config PATH] [--timeout S]
    insights-proxy-probe --url http://127.0.0.1:PORT/PATH [--timeout S]

`healthz` and `readyz` call the admin listener named by the proxy's own configuration: the TOML
file from `--config` or `$INSIGHTS_PROXY_CONFIG`, then the `INSIGHTS_PROXY_ADMIN__HOST`,
`__PORT`, `__TOKEN` and `__TOKEN_FILE` environment variables, which win over the file, as they do
for the proxy. `readyz` sends the admin token as a bearer token when one is configured, because
the proxy requires it on every admin route except `/healthz`. `--url` checks any loopback URL
without a token (the compose demo uses it for the stand-in).

Exit status: 0 when the response is HTTP 200, 1 for any other response or a connection failure,
2 for bad arguments or an unreadable configuration. On failure one line on standard error gives
the status and the start of the body, which for `/readyz` carries the reason. The admin routes
never return a token, and this script never prints the one it reads.

The script uses only the standard library, so it runs with any Python 3.11 or later. It ignores
`HTTP_PROXY` and connects to loopback addresses only.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ENV_CONFIG_PATH = "INSIGHTS_PROXY_CONFIG"
ENV_ADMIN_PREFIX = "INSIGHTS_PROXY_ADMIN__"
DEFAULT_ADMIN_PORT = 9901
BODY_PREVIEW_CHARS = 200


class ProbeConfigError(Exception):
    """The admin address or token could not be determined; the message names the value."""


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        url, token = _target(args)
    except ProbeConfigError as exc:
        print(f"insights-proxy-probe: {exc}", file=sys.stderr)
        return 2
    return _request(url, token, args.timeout)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="insights-proxy-probe",
        description="Exit 0 when a running insights-proxy responds with HTTP 200 on its "
                    "admin listener (or on --url), 1 otherwise.",
    )
    parser.add_argument("route", nargs="?", choices=("healthz", "readyz"),
                        help="admin route to call: healthz (process runs) or readyz "
                             "(a usable token is held)")
    parser.add_argument("--config", metavar="PATH",
                        help=f"proxy configuration file (default: ${ENV_CONFIG_PATH})")
    parser.add_argument("--url", help="call this loopback URL instead, without a token")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S",
                        help="seconds to wait for the response (default: 3)")
    args = parser.parse_args(argv)
    if (args.route is None) == (args.url is None):
        parser.error("give either a route (healthz or readyz) or --url, not both")
    if args.timeout <= 0:
        parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    return args


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.url is not None:
        host = urllib.parse.urlsplit(args.url).hostname or ""
        if not _is_loopback(host):
            raise ProbeConfigError(f"--url {args.url!r} is not a loopback URL; a probe checks "
                                   "this container only, so use 127.0.0.1 or [::1]")
        return args.url, ""

    admin = _admin_settings(args.config or os.environ.get(ENV_CONFIG_PATH))
    url = f"http://{_connect_host(admin['host'])}:{admin['port']}/{args.route}"
    token = admin["token"] if args.route == "readyz" else ""
    return url, token


def _admin_settings(config_path: str | None) -> dict[str, str]:
    """Merge `[admin]` of the configuration file with its environment overrides."""
    base = Path.cwd()
    settings: dict[str, str] = {}
    if config_path:
        path = Path(config_path)
        base = path.parent
        try:
            with path.open("rb") as handle:
                table = tomllib.load(handle).get("admin", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProbeConfigError(f"cannot read configuration {config_path!r}: {exc}") from None
        settings = {key: str(value) for key, value in table.items()}
    for key in ("host", "port", "token", "token_file"):
        value = os.environ.get(ENV_ADMIN_PREFIX + key.upper())
        if value is not None:
            settings[key] = value

    port = settings.get("port", str(DEFAULT_ADMIN_PORT))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ProbeConfigError(f"admin.port: invalid value {port!r}; expected 1-65535")
    return {
        "host": settings.get("host", "127.0.0.1"),
        "port": port,
        "token": _admin_token(settings, base),
    }


def _admin_token(settings: dict[str, str], base: Path) -> str:
    if settings.get("token"):
        return settings["token"].strip()
    token_file = settings.get("token_file", "")
    if not token_file:
        return ""
    # The proxy reads a relative token_file beside its configuration file; so does the probe.
    path = Path(token_file) if Path(token_file).is_absolute() else base / token_file
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProbeConfigError(f"admin.token_file: cannot read {str(path)!r} "
                               f"({exc.strerror})") from None


def _connect_host(bind_host: str) -> str:
    """Return a loopback address that reaches a listener bound to `bind_host`."""
    host = bind_host.strip("[]")
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if not _is_loopback(host):
        raise ProbeConfigError(f"admin.host: {bind_host!r} is neither loopback nor a wildcard "
                               "address, so the probe cannot reach it from inside the container")
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _request(url: str, token: str, timeout: float) -> int:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # An empty ProxyHandler ignores HTTP_PROXY and friends, which must not catch loopback calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return 0 if response.status == 200 else _report(url, response.status, b"")
    except urllib.error.HTTPError as exc:
        return _report(url, exc.code, exc.read(BODY_PREVIEW_CHARS))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"insights-proxy-probe: {url} failed: {reason}", file=sys.stderr)
        return 1


def _report(url: str, status: int, body: bytes) -> int:
    # The admin routes indent their JSON; one line reads better in `docker inspect` and events.
    preview = " ".join(body.decode("utf-8", "replace").split())
    print(f"insights-proxy-probe: {url} returned HTTP {status}: {preview}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
