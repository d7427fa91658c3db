"""Shared fixtures: a fake clock, the Choreo stand-in, an in-process proxy, a log leak check.

After every test, its captured log records and request lines are searched for the stand-in's
client secret and for every access token it issued. A match fails the test.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import LoadedSettings, Settings, build_settings, load_settings
from proxy.log import ACCESS_LOG, configure_logging
from proxy.server import ProxyServer
from proxy.standin.insights import FIXTURE_ORG
from proxy.standin.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from proxy.standin import (
    STANDIN_STATE, StandinSettings, StandinState, insights_url, revoke_url, start_standin,
    token_url,
)

configure_logging("json", "debug")

# Values no log line may contain, gathered by the fixtures below during one test.
_SECRETS: set[str] = set()


class FakeClock:
    """Wall-clock seconds that move only when a test advances them."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class AccessLines:
    """The request log lines written during one test."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def text(self) -> str:
        ACCESS_LOG.flush()
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture(autouse=True)
def access_log() -> Iterator[AccessLines]:
    capture = AccessLines()
    ACCESS_LOG.stream = capture.stream
    yield capture
    ACCESS_LOG.flush()
    ACCESS_LOG.stream = None


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture, access_log: AccessLines):
    """Fail the test when any log record or request line contains a secret or access token."""
    caplog.set_level(logging.DEBUG)
    _SECRETS.clear()
    yield
    texts = [access_log.text()]
    for record in caplog.records:
        texts.append(f"{record.getMessage()} {record.msg!r} {record.args!r} "
                     f"{record.exc_text or ''}")
    leaked = {secret[:6] + "…" for text in texts for secret in _SECRETS if secret in text}
    assert not leaked, f"secrets or tokens found in the logs: {sorted(leaked)}"


def remember_secret(value: str) -> None:
    _SECRETS.add(value)


@dataclass
class StandIn:
    """A running stand-in and handles to its state."""

    base: str
    state: StandinState
    settings: StandinSettings

    @property
    def stats(self) -> dict[str, int]:
        return self.state.stats.as_dict()

    def issued_tokens(self) -> list[str]:
        return [token.value for token in self.state.tokens._by_jti.values()]


@pytest.fixture
async def start_stand_in() -> AsyncIterator[Callable[..., Any]]:
    runners = []
    stand_ins: list[StandIn] = []

    async def start(**overrides: Any) -> StandIn:
        settings = replace(StandinSettings(), **overrides)
        remember_secret(settings.client_secret)
        runner, base = await start_standin(settings)
        runners.append(runner)
        stand_in = StandIn(base, runner.app[STANDIN_STATE], settings)
        stand_ins.append(stand_in)
        return stand_in

    yield start
    for stand_in in stand_ins:
        for value in stand_in.issued_tokens():
            remember_secret(value)
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def stand_in(start_stand_in: Callable[..., Any]) -> StandIn:
    return await start_stand_in()


def proxy_config(stand_in: StandIn, **sections: dict[str, Any]) -> dict[str, Any]:
    """A configuration table for a proxy in front of a stand-in, on free loopback ports."""
    raw: dict[str, Any] = {
        "server": {"port": 0},
        "admin": {"port": 0},
        "upstream": {"url": insights_url(stand_in.base)},
        "oauth": {"token_url": token_url(stand_in.base), "revoke_url": revoke_url(stand_in.base),
                  "client_id": stand_in.settings.client_id,
                  "client_secret": stand_in.settings.client_secret},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    return raw


@dataclass
class RunningProxy:
    server: ProxyServer
    url: str
    admin_url: str
    session: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.server.holder.current.settings

    async def post(self, payload: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.session.post(self.url, json=payload, **kwargs)
        await response.read()
        return response

    async def query(self, query: str, variables: dict[str, Any] | None = None,
                    **kwargs: Any) -> tuple[aiohttp.ClientResponse, Any]:
        response = await self.post({"query": query, "variables": variables or {}}, **kwargs)
        return response, await response.json(content_type=None)


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Any]]:
    running: list[RunningProxy] = []

    async def start(raw: dict[str, Any] | None = None, *, path: Path | None = None,
                    clock: Callable[[], float] = time.time) -> RunningProxy:
        if path is not None:
            loaded = load_settings(path)
        else:
            loaded = LoadedSettings(build_settings(raw or {}, use_environment=False), None, [])
        server = ProxyServer(loaded, clock=clock)
        listeners = await server.start()
        session = aiohttp.ClientSession()
        proxy = RunningProxy(server, listeners.proxy_url, listeners.admin_url, session)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        await proxy.session.close()
        await proxy.server.stop()


@pytest.fixture
async def proxy(stand_in: StandIn, start_proxy: Callable[..., Any]) -> RunningProxy:
    return await start_proxy(proxy_config(stand_in))


def to_toml(raw: dict[str, Any]) -> str:
    """Write a configuration table as TOML (tables of scalars, lists and inline tables)."""
    lines = []
    for section, values in raw.items():
        if isinstance(values, list):
            for entry in values:
                lines.append(f"[[{section}]]")
                lines.extend(f"{key} = {_toml_value(value)}" for key, value in entry.items())
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value)


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(to_toml(raw))
    path.chmod(0o600)
    return path


SAMPLE_QUERY = "query ($org: OrgFilter!) { listEnvironments(org: $org) { id name } }"


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- the command as separate processes ---------------------------------------------------

COMMAND = [sys.executable, "-m", "proxy"]
ENDPOINT_LINE = re.compile(r"GraphQL endpoint (\S+), admin (\S+)")


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("INSIGHTS_PROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    """A running command whose standard output is read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Process:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=clean_env())
        return cls(process)

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 20) -> re.Match:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    stderr = await self.process.stderr.read()
                    raise AssertionError(f"process ended before {regex.pattern!r}: "
                                         f"{stderr.decode()[-2000:]}")
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                match = regex.search(line)
                if match:
                    return match

    async def stop(self, signum: int | None = signal.SIGINT,
                   timeout: float = 20) -> tuple[int, str]:
        if self.process.returncode is None and signum is not None:
            self.process.send_signal(signum)
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate()
        self.lines.extend(out.decode().splitlines())
        return self.process.returncode, err.decode()


@pytest.fixture
async def processes():
    started: list[Process] = []

    async def start(*args: str) -> Process:
        process = await Process.start(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


def config_for(base: str, tmp_path: Path, **extra_sections) -> Path:
    raw = {
        "server": {"port": 0},
        "admin": {"port": 0},
        "upstream": {"url": f"{base}/93tu/insights/1.0.0/query-api",
                     "default_variables": {"org": {"orgId": FIXTURE_ORG.uuid}}},
        "oauth": {"token_url": f"{base}/oauth2/token", "revoke_url": f"{base}/oauth2/revoke",
                  "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
        "log": {"format": "json"},
    }
    for section, values in extra_sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return write_config(tmp_path / "proxy.toml", raw)
