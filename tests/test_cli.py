"""The `insights-proxy` command as users run it: separate processes on loopback ports."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from proxy.standin.settings import DEMO_CLIENT_SECRET

from .conftest import (
    COMMAND, ENDPOINT_LINE, SAMPLE_QUERY, clean_env, config_for, remember_secret,
)

def run(*args: str, stdin: str | None = None, cwd: Path | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=clean_env())


@pytest.fixture(autouse=True)
def demo_secret_is_secret():
    remember_secret(DEMO_CLIENT_SECRET)


@pytest.mark.parametrize("command", ["serve", "demo", "simulate", "check", "admin", "hash-key"])
def test_cli_help_describes_options(command):
    """Every command prints --help with its options."""
    result = run(command, "--help")
    assert result.returncode == 0
    assert "usage: insights-proxy" in result.stdout


def test_cli_serve_without_config_exits_2(tmp_path):
    """serve with no --config, no $INSIGHTS_PROXY_CONFIG and no local file exits 2 naming both."""
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "INSIGHTS_PROXY_CONFIG" in result.stderr
    assert "insights-proxy.toml" in result.stderr


def test_cli_serve_bad_config_exits_2_before_listening(tmp_path):
    """A configuration error names the key and exits 2 before any port opens."""
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = "x"\n[oauth]\nclient_id = "a"\nclient_secret = "s3cr3t-v"\n')
    path.chmod(0o600)
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "server.port" in result.stderr
    assert "s3cr3t-v" not in result.stderr


def test_cli_serve_rejects_secret_argument(tmp_path):
    """serve takes no secret as an argument."""
    result = run("serve", "--client-secret", "abc")
    assert result.returncode == 2


def test_cli_bad_port_exits_2():
    """A bad port names the value and the valid range."""
    result = run("demo", "--port", "99999")
    assert result.returncode == 2
    assert "99999" in result.stderr


def test_cli_hash_key():
    """hash-key reads a key on standard input and prints its sha256 hash."""
    result = run("hash-key", stdin="a-long-random-client-key-123\n")
    assert result.returncode == 0
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", result.stdout)
    short = run("hash-key", stdin="short\n")
    assert short.returncode == 2
    assert "at least 16" in short.stderr


async def test_cli_demo_curl_returns_environments(processes):
    """demo prints a curl command that returns the demo organization's environments."""
    demo = await processes("demo", "--port", "0", "--admin-port", "0")
    match = await demo.wait_for_line(r"^\s+(curl .*)$")
    await demo.wait_for_line("Ctrl-C")
    argv = shlex.split(match.group(1))
    url = argv[2]
    body = argv[argv.index("-d") + 1]
    assert "Authorization" not in match.group(1)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            result = await response.json()
    names = sorted(env["name"] for env in result["data"]["listEnvironments"])
    assert names == ["Development", "Production"]
    code, stderr = await demo.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def start_simulate(processes, *extra: str):
    simulate = await processes("simulate", "--port", "0", *extra)
    match = await simulate.wait_for_line(r"listening on (http://\S+)")
    await simulate.wait_for_line("Ctrl-C")
    return simulate, match.group(1)


async def test_cli_check_against_simulate(processes, tmp_path):
    """check passes every step against a running stand-in, and fails on a wrong secret."""
    simulate, base = await start_simulate(processes)
    path = config_for(base, tmp_path)
    result = await asyncio.to_thread(run, "check", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["PASS", "configuration"], ["PASS", "token"], ["PASS", "listOrganizations"],
        ["PASS", "listEnvironments"]]
    bad = config_for(base, tmp_path, oauth={"client_secret": "not-the-secret-1"})
    remember_secret("not-the-secret-1")
    result = await asyncio.to_thread(run, "check", "--config", str(bad))
    assert result.returncode == 1
    assert "FAIL  token" in result.stdout
    assert "invalid_client" in result.stdout
    assert "not-the-secret-1" not in result.stdout + result.stderr
    await simulate.stop()


async def test_cli_serve_admin_and_signals(processes, tmp_path):
    """serve handles queries; admin commands work; SIGHUP reloads; SIGTERM exits 0."""
    simulate, base = await start_simulate(processes)
    admin_token = "cli-admin-token-0001"
    remember_secret(admin_token)
    path = config_for(base, tmp_path, admin={"token": admin_token})
    serve = await processes("serve", "--config", str(path))
    match = await serve.wait_for_line(ENDPOINT_LINE)
    url, admin_url = match.group(1), match.group(2)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"query": SAMPLE_QUERY}) as response:
            result = await response.json()
    assert len(result["data"]["listEnvironments"]) == 2

    port = admin_url.rsplit(":", 1)[1]
    raw = path.read_text().replace("[admin]\nport = 0", f"[admin]\nport = {port}")
    path.write_text(raw)
    token = await asyncio.to_thread(run, "admin", "token", "--config", str(path))
    assert token.returncode == 0, token.stderr
    assert json.loads(token.stdout)["state"] in ("valid", "expiring")
    purge = await asyncio.to_thread(run, "admin", "purge", "--config", str(path))
    assert json.loads(purge.stdout) == {"removed": 1}
    revoke = await asyncio.to_thread(run, "admin", "revoke", "--config", str(path))
    assert revoke.returncode == 0, revoke.stdout
    assert json.loads(revoke.stdout)["revoked"] is True

    serve.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    code, stderr = await serve.stop(signal.SIGTERM)
    assert code == 0
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "config.reloaded" in events
    assert "proxy.stopped" in events
    assert admin_token not in stderr
    assert DEMO_CLIENT_SECRET not in stderr
    await simulate.stop()


async def test_cli_sigterm_drains_in_flight(processes, tmp_path):
    """SIGTERM lets an in-flight request finish before the process exits 0."""
    simulate, base = await start_simulate(processes)
    path = config_for(base, tmp_path)
    serve = await processes("serve", "--config", str(path))
    url = (await serve.wait_for_line(ENDPOINT_LINE)).group(1)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/_standin/faults", json={"insights_latency_ms": 1500}):
            pass
        request = asyncio.ensure_future(session.post(url, json={"query": SAMPLE_QUERY}))
        await asyncio.sleep(0.5)
        serve.process.send_signal(signal.SIGTERM)
        response = await request
        assert response.status == 200
        await response.read()
    code, stderr = await serve.stop(None)
    assert code == 0, stderr
    await simulate.stop()


async def test_cli_port_in_use_clean_error(processes, tmp_path):
    """A port already in use exits 1 with a message naming the key, not a traceback."""
    simulate, base = await start_simulate(processes)
    busy = int(base.rsplit(":", 1)[1])
    path = config_for(base, tmp_path, server={"port": busy})
    result = await asyncio.to_thread(run, "serve", "--config", str(path))
    assert result.returncode == 1
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr
    demo = await asyncio.to_thread(run, "demo", "--port", str(busy))
    assert demo.returncode == 1
    assert "--port" in demo.stderr
    assert "Traceback" not in demo.stderr
    await simulate.stop()
