"""The proxy under test and the Choreo stand-in that issues its tokens.

Both run through the project's own command line (`python -m proxy serve` and `simulate`) with
this interpreter, so the benchmark measures what a user installs.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import nginx, procs

CLIENT_ID = "bench-client"
# Only the stand-in on 127.0.0.1 accepts this pair; it protects nothing.
CLIENT_SECRET = "bench-secret-not-for-production"
TOKEN_LIFETIME_S = 3600
LOCAL_PATH = "/query-api"


@dataclass(frozen=True)
class CacheSetting:
    ttl_s: float
    max_entries: int = 1000
    max_bytes: int = 67_108_864


def check_runnable() -> str | None:
    """Return why `python -m proxy serve` cannot run here, or None when it can."""
    for command in (["serve", "--help"], ["simulate", "--help"]):
        try:
            completed = subprocess.run(
                procs.python_command("-m", "proxy", *command),
                capture_output=True,
                text=True,
                timeout=60,
                env=procs.child_environment(),
            )
        except subprocess.TimeoutExpired:
            return f"`python -m proxy {' '.join(command)}` did not finish within 60 s"
        if completed.returncode != 0:
            output = (completed.stderr or completed.stdout).strip().splitlines()
            last = output[-1] if output else f"exit status {completed.returncode}"
            return f"`python -m proxy {' '.join(command)}` failed: {last}"
    return None


def proxy_version() -> str:
    completed = subprocess.run(
        procs.python_command("-c", "import importlib.metadata as m; print(m.version('choreo-insights-proxy'))"),
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or "unknown"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(sections: dict[str, dict[str, object]]) -> str:
    """Render flat sections of strings, numbers, booleans and lists as TOML."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class StandIn:
    child: procs.Child
    port: int

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    @property
    def revoke_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/revoke"

    def token_requests(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_standin/stats", timeout=5) as response:
            return int(json.load(response)["token_requests"])


def start_standin(group: procs.ProcessGroup, cpu: int | None) -> StandIn:
    """Start `python -m proxy simulate` with the benchmark's client and a one-hour token lifetime."""
    port = procs.free_port()
    argv = procs.python_command(
        "-m",
        "proxy",
        "simulate",
        "--port",
        str(port),
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--token-lifetime",
        str(TOKEN_LIFETIME_S),
    )
    child = group.start("standin", argv, cpu=cpu)
    procs.wait_for_http(child, f"http://127.0.0.1:{port}/_standin/stats")
    return StandIn(child, port)


@dataclass(frozen=True)
class Proxy:
    child: procs.Child
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{LOCAL_PATH}"


def start_proxy(
    group: procs.ProcessGroup,
    name: str,
    work_dir: Path,
    standin: StandIn,
    upstream_port: int,
    cache: CacheSetting,
    *,
    cpu: int | None,
    log_level: str,
) -> Proxy:
    """Write a config for `name`, start `python -m proxy serve` with it and wait for /healthz."""
    port = procs.free_port()
    admin_port = procs.free_port()

    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "path": LOCAL_PATH,
            "allowed_hosts": ["127.0.0.1", "localhost"],
            # Teardown should not wait the default 10 s for connections wrk left open.
            "drain_timeout_s": 1,
        },
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}{nginx.UPSTREAM_PATH}", "timeout_s": 30},
        "oauth": {
            "token_url": standin.token_url,
            "revoke_url": standin.revoke_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "cache": {"ttl_s": cache.ttl_s, "max_entries": cache.max_entries, "max_bytes": cache.max_bytes},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "log": {"format": "json", "level": log_level},
    }

    config_path = work_dir / f"{name}.toml"
    # The file contains the client secret, and the proxy warns about such a file that others can read.
    config_path.touch(mode=0o600)
    config_path.write_text(render_toml(config))
    argv = procs.python_command("-m", "proxy", "serve", "--config", str(config_path))
    child = group.start(name, argv, cpu=cpu)
    procs.wait_for_http(child, f"http://127.0.0.1:{admin_port}/healthz")
    return Proxy(child, port, admin_port)
