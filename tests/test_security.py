"""Attacks on the GraphQL listener: foreign hosts, browsers, missing keys, odd framing, TLS.

Most tests talk to the proxy over raw sockets (`asyncio.open_connection`), because HTTP client
libraries refuse to send the malformed requests under test. A canary listener stands for any
host an attacker would like the proxy to contact: it must never see a connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from yarl import URL

from proxy.config import ClientSettings, ConfigError, build_settings, load_settings
from proxy.errors import HostNotAllowed, RateLimited
from proxy.log import configure_logging
from proxy.security import ClientKeys, HostAllowlist, hash_client_key, split_host

from .conftest import FakeClock, proxy_config, remember_secret, wait_for, write_config

ORGS_QUERY = "{ listOrganizations { id } }"
ORGS_BODY = json.dumps({"query": ORGS_QUERY}).encode()
GRAFANA_KEY = "grafana-client-key-0123456789abcdef"
EXCEL_KEY = "excel-client-key-fedcba9876543210"
EVIL_ORIGIN = "https://evil.example"


@pytest.fixture(autouse=True)
def client_keys_are_secret() -> None:
    for key in (GRAFANA_KEY, EXCEL_KEY):
        remember_secret(key)


# -- helpers -----------------------------------------------------------------------------------


class Canary:
    """A loopback listener that records every connection made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            self.received += await asyncio.wait_for(reader.read(65536), 1.0)
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    listener = Canary()
    await listener.start()
    yield listener
    await listener.close()


@pytest.fixture
async def keyed_proxy(stand_in, start_proxy):
    """A proxy with two client keys, where grafana may send three requests per minute."""
    clients = [
        {"name": "grafana", "key_hash": hash_client_key(GRAFANA_KEY), "requests_per_minute": 3},
        {"name": "excel", "key_hash": hash_client_key(EXCEL_KEY)},
    ]
    return await start_proxy(proxy_config(stand_in, clients=clients))


def port_of(proxy) -> int:
    return URL(proxy.url).port


async def exchange(port: int, *parts: bytes, pause_s: float = 0.0,
                   timeout_s: float = 2.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and return all bytes received until EOF or timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (asyncio.TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


def request_bytes(target: str = "/query-api", *, method: str = "POST", host: str = "localhost",
                  headers: dict[str, str] | None = None, body: bytes | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    """Build one request that closes its connection, with a Content-Length for the body."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    all_headers = {"Connection": "close", **(headers or {})}
    if body is not None and "Transfer-Encoding" not in all_headers:
        all_headers.setdefault("Content-Length", str(len(body)))
    lines.extend(f"{name}: {value}" for name, value in all_headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def get_target(query: str = ORGS_QUERY) -> str:
    return "/query-api?query=" + quote(query, safe="")


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/"), f"no HTTP response: {raw[:200]!r}"
    return int(raw.split(b" ", 2)[1])


def headers_of(raw: bytes) -> dict[str, str]:
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    headers = {}
    for line in head:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return headers


def body_of(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def error_code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


def error_message(body: dict) -> str:
    return body["errors"][0]["message"]


def json_headers(**extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", **extra}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_lines(access_log) -> list[dict]:
    return access_log.lines()


async def settled_token_requests(proxy, stand_in) -> int:
    """Wait for the proxy's warm-up token request, then return the stand-in's count."""
    await wait_for(lambda: proxy.server.holder.current.tokens.current() is not None)
    return stand_in.stats["token_requests"]


# -- Host allowlist (DNS rebinding) ------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "evil.example",
    "evil.example:{port}",
    "EVIL.example:{port}",
    "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}",
    "attacker.localhost:{port}",
    "127.0.0.2:{port}",
    "0.0.0.0:{port}",
    "[::2]:{port}",
    "localhost:{port}@evil.example",
    "localhost:notaport",
    "[::1]evil.example",
    "[::1",
    "localhost evil.example",
    "",
])
async def test_host_rebinding_values_rejected(proxy, stand_in, host):
    """A Host outside server.allowed_hosts gets 403 HOST_NOT_ALLOWED naming the key."""
    tokens_before = await settled_token_requests(proxy, stand_in)
    target = host.format(port=port_of(proxy))
    raw = await exchange(port_of(proxy), request_bytes(host=target, headers=json_headers(),
                                                       body=ORGS_BODY))
    assert status_of(raw) == 403
    body = body_of(raw)
    assert error_code(body) == "HOST_NOT_ALLOWED"
    assert "server.allowed_hosts" in error_message(body)
    assert "access-control-allow-origin" not in headers_of(raw)
    assert stand_in.stats["insights_requests"] == 0
    assert stand_in.stats["token_requests"] == tokens_before


@pytest.mark.parametrize("host", [
    "localhost",
    "localhost:{port}",
    "LOCALHOST:{port}",
    "localhost.:{port}",
    "127.0.0.1:{port}",
    "[::1]:{port}",
    "[0:0:0:0:0:0:0:1]:{port}",
    "[::1]",
])
async def test_host_loopback_forms_accepted(proxy, host):
    """The default allowlist accepts loopback names with any port, case or IPv6 spelling."""
    target = host.format(port=port_of(proxy))
    raw = await exchange(port_of(proxy), request_bytes(host=target, headers=json_headers(),
                                                       body=ORGS_BODY))
    assert status_of(raw) == 200, raw[:300]


async def test_host_entry_with_port_pins_port(stand_in, start_proxy):
    """An allowed_hosts entry with a port accepts that port only."""
    proxy = await start_proxy(proxy_config(
        stand_in, server={"port": 0, "allowed_hosts": ["proxy.internal:8443"]}))
    expected = {"proxy.internal:8443": 200, "PROXY.internal:8443": 200,
                "proxy.internal:08443": 200, "proxy.internal:8080": 403, "proxy.internal": 403,
                "localhost": 403}
    for host, status in expected.items():
        raw = await exchange(port_of(proxy), request_bytes(host=host, headers=json_headers(),
                                                           body=ORGS_BODY))
        assert status_of(raw) == status, host


async def test_host_missing_or_duplicated_rejected(proxy, stand_in):
    """A missing Host is 403 in HTTP/1.0 and 400 in HTTP/1.1, and two Host headers are 400."""
    port = port_of(proxy)
    raw = await exchange(port, request_bytes(get_target(), method="GET", host=None,
                                             version="HTTP/1.0"))
    assert status_of(raw) == 403
    assert error_code(body_of(raw)) == "HOST_NOT_ALLOWED"

    raw = await exchange(port, request_bytes(get_target(), method="GET", host=None))
    assert status_of(raw) == 400

    raw = await exchange(port, request_bytes(get_target(), method="GET",
                                             headers={"Host": "evil.example"}))
    assert status_of(raw) == 400
    assert stand_in.stats["insights_requests"] == 0


async def test_host_checked_before_cache(proxy, stand_in):
    """A cached response is not served to a request whose Host is not allowed."""
    port = port_of(proxy)
    first = await exchange(port, request_bytes(get_target(), method="GET"))
    assert status_of(first) == 200
    hit = await exchange(port, request_bytes(get_target(), method="GET"))
    assert headers_of(hit)["cache-status"].startswith("insights-proxy; hit")
    rebound = await exchange(port, request_bytes(get_target(), method="GET",
                                                 host="evil.example"))
    assert status_of(rebound) == 403
    assert "hit" not in headers_of(rebound)["cache-status"]
    assert stand_in.stats["insights_requests"] == 1


def test_split_host_normalises_and_rejects():
    """split_host lower-cases, strips a trailing dot, compresses IPv6 and rejects junk."""
    assert split_host("LocalHost.:8080") == ("localhost", 8080)
    assert split_host("[0:0:0:0:0:0:0:1]:80") == ("[::1]", 80)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("127.0.0.1") == ("127.0.0.1", None)
    for junk in ("localhost:80@evil.example", "[::1]x", "[::1", "[not-ip]", "a b",
                 "localhost:80:80", "localhost:-1", "localhost:123456", "..", "a..b"):
        assert split_host(junk) is None, junk


def test_host_allowlist_entry_invalid_config_error():
    """An allowed_hosts entry that can never match is a configuration error."""
    with pytest.raises(ConfigError) as failure:
        build_settings({"oauth": {"client_id": "a", "client_secret": "s3cret-value"},
                        "server": {"allowed_hosts": ["localhost:80@evil.example"]}},
                       use_environment=False)
    assert "server.allowed_hosts: invalid entry 'localhost:80@evil.example'" in str(failure.value)


def test_host_allowlist_memo_bounded():
    """The per-value memo stays bounded under a flood of distinct Host values."""
    allowlist = HostAllowlist(("localhost",))
    for number in range(1000):
        with pytest.raises(HostNotAllowed):
            allowlist.check(f"host-{number}.example")
    assert len(allowlist._known) <= 256


# -- Browsers: content types, Origin, Fetch metadata, CORS -------------------------------------


SIMPLE_BODIES = {
    "text/plain": ("text/plain", ORGS_BODY),
    "form": ("application/x-www-form-urlencoded",
             b"query=" + quote(ORGS_QUERY, safe="").encode()),
    "multipart": ("multipart/form-data; boundary=xyz",
                  b'--xyz\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
                  + ORGS_QUERY.encode() + b"\r\n--xyz--\r\n"),
    "text/plain with json suffix": ("text/plain; application/json", ORGS_BODY),
    "no content type": (None, ORGS_BODY),
}


@pytest.mark.parametrize("kind", SIMPLE_BODIES)
async def test_browser_simple_post_without_origin_415(proxy, stand_in, kind):
    """A simple-request body (no preflight possible) is 415 and never forwarded."""
    content_type, body = SIMPLE_BODIES[kind]
    headers = {"Content-Type": content_type} if content_type else {}
    raw = await exchange(port_of(proxy), request_bytes(headers=headers, body=body))
    assert status_of(raw) == 415
    assert error_code(body_of(raw)) == "UNSUPPORTED_MEDIA_TYPE"
    assert stand_in.stats["insights_requests"] == 0


@pytest.mark.parametrize("kind", [*SIMPLE_BODIES, "json"])
@pytest.mark.parametrize("origin", [EVIL_ORIGIN, "null", "http://localhost:3000"])
async def test_browser_foreign_origin_403(proxy, stand_in, kind, origin):
    """A request with an Origin not in server.allowed_origins is 403 without CORS headers."""
    content_type, body = SIMPLE_BODIES.get(kind, ("application/json", ORGS_BODY))
    headers = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
    if content_type:
        headers["Content-Type"] = content_type
    raw = await exchange(port_of(proxy), request_bytes(headers=headers, body=body))
    assert status_of(raw) == 403
    assert error_code(body_of(raw)) == "ORIGIN_NOT_ALLOWED"
    assert "server.allowed_origins" in error_message(body_of(raw))
    assert not any(name.startswith("access-control-") for name in headers_of(raw))
    assert stand_in.stats["insights_requests"] == 0


async def test_browser_cross_site_get_403(proxy, stand_in):
    """A GET marked Sec-Fetch-Site: cross-site (an img or script tag) is 403."""
    port = port_of(proxy)
    raw = await exchange(port, request_bytes(get_target(), method="GET",
                                             headers={"Sec-Fetch-Site": "cross-site",
                                                      "Sec-Fetch-Mode": "no-cors"}))
    assert status_of(raw) == 403
    assert error_code(body_of(raw)) == "ORIGIN_NOT_ALLOWED"
    assert stand_in.stats["insights_requests"] == 0
    for site in ("same-origin", "none"):
        raw = await exchange(port, request_bytes(get_target(), method="GET",
                                                 headers={"Sec-Fetch-Site": site}))
        assert status_of(raw) == 200, site


@pytest.mark.parametrize("document", ["mutation { revokeEverything }",
                                      "subscription { alerts { id } }"])
async def test_browser_get_mutation_405(proxy, stand_in, document):
    """A mutation or subscription over GET (a link or img tag) is 405 with Allow: POST."""
    raw = await exchange(port_of(proxy), request_bytes(get_target(document), method="GET"))
    assert status_of(raw) == 405
    assert headers_of(raw)["allow"] == "POST"
    assert stand_in.stats["insights_requests"] == 0


async def test_cors_absent_by_default(proxy):
    """With no allowed origins, no response carries a CORS header."""
    port = port_of(proxy)
    for request in (request_bytes(get_target(), method="GET"),
                    request_bytes(method="OPTIONS", headers={
                        "Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST"})):
        raw = await exchange(port, request)
        assert not any(name.startswith("access-control-") for name in headers_of(raw))


async def test_cors_echoes_allowed_origin_only(stand_in, start_proxy):
    """An allowed origin is echoed (never `*`) with Vary: Origin, and other origins get 403."""
    allowed = "http://localhost:3000"
    proxy = await start_proxy(proxy_config(stand_in, server={
        "port": 0, "allowed_origins": [allowed]}))
    port = port_of(proxy)

    raw = await exchange(port, request_bytes(headers=json_headers(Origin=allowed),
                                             body=ORGS_BODY))
    assert status_of(raw) == 200
    headers = headers_of(raw)
    assert headers["access-control-allow-origin"] == allowed
    assert "origin" in headers["vary"].lower()

    preflight = await exchange(port, request_bytes(method="OPTIONS", headers={
        "Origin": allowed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}))
    assert status_of(preflight) == 204
    assert headers_of(preflight)["access-control-allow-origin"] == allowed
    assert "POST" in headers_of(preflight)["access-control-allow-methods"]

    for origin in (EVIL_ORIGIN, "http://localhost:3001", "null", "*"):
        raw = await exchange(port, request_bytes(method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"}))
        assert status_of(raw) == 403, origin
        assert "access-control-allow-origin" not in headers_of(raw)


async def test_cors_preflight_needs_no_client_key(stand_in, start_proxy):
    """A preflight from an allowed origin passes without a key, but the request needs one."""
    allowed = "http://localhost:3000"
    proxy = await start_proxy(proxy_config(
        stand_in, server={"port": 0, "allowed_origins": [allowed]},
        clients=[{"name": "dashboard", "key_hash": hash_client_key(GRAFANA_KEY)}]))
    port = port_of(proxy)
    preflight = await exchange(port, request_bytes(method="OPTIONS", headers={
        "Origin": allowed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}))
    assert status_of(preflight) == 204
    assert "Authorization" in headers_of(preflight)["access-control-allow-headers"]

    keyless = await exchange(port, request_bytes(headers=json_headers(Origin=allowed),
                                                 body=ORGS_BODY))
    assert status_of(keyless) == 401
    keyed = await exchange(port, request_bytes(
        headers=json_headers(Origin=allowed, Authorization=f"Bearer {GRAFANA_KEY}"),
        body=ORGS_BODY))
    assert status_of(keyed) == 200

    # An OPTIONS that is not a preflight still needs the key.
    bare = await exchange(port, request_bytes(method="OPTIONS", headers={"Origin": allowed}))
    assert status_of(bare) == 401


@pytest.mark.parametrize("origin", ["*", "null", "http://localhost:3000/app",
                                    "localhost:3000", "ftp://localhost"])
def test_allowed_origins_invalid_config_error(origin):
    """allowed_origins takes serialized origins only, so `*` and `null` are rejected."""
    with pytest.raises(ConfigError) as failure:
        build_settings({"oauth": {"client_id": "a", "client_secret": "s3cret-value"},
                        "server": {"allowed_origins": [origin]}}, use_environment=False)
    assert f"server.allowed_origins: invalid origin {origin!r}" in str(failure.value)


# -- Client keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong-key-0123456789abcdef",
    f"Bearer {GRAFANA_KEY}x",
    f"bearer  {GRAFANA_KEY[:-1]}",
    basic("grafana", "wrong-key-0123456789"),
    basic(GRAFANA_KEY, ""),
    "Basic not-base64!!",
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    f"Token {GRAFANA_KEY}",
    f"Digest {GRAFANA_KEY}",
])
async def test_client_key_missing_or_wrong_401(keyed_proxy, stand_in, authorization):
    """Without a valid key the response is 401 with Bearer and Basic challenges."""
    headers = json_headers()
    if authorization is not None:
        headers["Authorization"] = authorization
    raw = await exchange(port_of(keyed_proxy), request_bytes(headers=headers, body=ORGS_BODY))
    assert status_of(raw) == 401
    assert error_code(body_of(raw)) == "CLIENT_KEY_REQUIRED"
    challenge = headers_of(raw)["www-authenticate"]
    assert "Bearer" in challenge
    assert "Basic" in challenge
    assert stand_in.stats["insights_requests"] == 0


@pytest.mark.parametrize("authorization", [
    f"Bearer {GRAFANA_KEY}",
    f"bearer {GRAFANA_KEY}",
    basic("powerbi", EXCEL_KEY),
    basic("", EXCEL_KEY),
    basic("user", GRAFANA_KEY),
])
async def test_client_key_bearer_or_basic_accepted(keyed_proxy, authorization):
    """A key works as a Bearer token or as the password of HTTP Basic."""
    response, body = await keyed_proxy.query(ORGS_QUERY,
                                             headers={"Authorization": authorization})
    assert response.status == 200, body
    assert "listOrganizations" in body["data"]


async def test_client_key_checked_before_cache(keyed_proxy, stand_in):
    """A cached response is served only to a request that presents a valid key."""
    headers = {"Authorization": f"Bearer {EXCEL_KEY}"}
    first, _ = await keyed_proxy.query(ORGS_QUERY, headers=headers)
    assert first.status == 200
    hit, _ = await keyed_proxy.query(ORGS_QUERY, headers=headers)
    assert hit.headers["Cache-Status"].startswith("insights-proxy; hit")

    for attempt in ({}, {"Authorization": "Bearer not-the-key-0123456789"}):
        response, body = await keyed_proxy.query(ORGS_QUERY, headers=attempt)
        assert response.status == 401
        assert "hit" not in response.headers["Cache-Status"]
        assert "listOrganizations" not in json.dumps(body)
    assert stand_in.stats["insights_requests"] == 1


async def test_client_name_in_log_and_metrics(keyed_proxy, access_log):
    """The client's name appears in its request log lines and in the request metrics."""
    await keyed_proxy.query(ORGS_QUERY, headers={"Authorization": f"Bearer {EXCEL_KEY}"})
    await keyed_proxy.query(ORGS_QUERY)
    lines = request_lines(access_log)
    assert [line["client"] for line in lines] == ["excel", None]
    assert [line["status"] for line in lines] == [200, 401]
    async with keyed_proxy.session.get(keyed_proxy.admin_url + "/metrics") as response:
        metrics = await response.text()
    assert 'client="excel"' in metrics


async def test_client_rate_limit_429(keyed_proxy, stand_in):
    """A client over requests_per_minute gets 429 with Retry-After, and other clients do not."""
    grafana = {"Authorization": f"Bearer {GRAFANA_KEY}"}
    statuses = [(await keyed_proxy.query(ORGS_QUERY, headers=grafana))[0].status
                for _ in range(3)]
    assert statuses == [200, 200, 200]
    response, body = await keyed_proxy.query(ORGS_QUERY, headers=grafana)
    assert response.status == 429
    assert error_code(body) == "RATE_LIMITED"
    assert "'grafana'" in error_message(body)
    assert 1 <= int(response.headers["Retry-After"]) <= 20
    # Cache hits count too, since the limit is applied before the cache: only the first
    # request reached the upstream.
    assert stand_in.stats["insights_requests"] == 1

    excel, _ = await keyed_proxy.query(ORGS_QUERY, headers={
        "Authorization": f"Bearer {EXCEL_KEY}"})
    assert excel.status == 200


def test_client_rate_limit_refills_with_time():
    """The bucket refills at requests_per_minute / 60 per second and is per client."""
    clock = FakeClock(start=1000.0)
    limited = ClientSettings(name="limited", key_hash=hash_client_key(GRAFANA_KEY),
                             requests_per_minute=2)
    other = ClientSettings(name="other", key_hash=hash_client_key(EXCEL_KEY))
    keys = ClientKeys((limited, other), clock=clock)
    bearer = f"Bearer {GRAFANA_KEY}"
    assert keys.authenticate(bearer) == "limited"
    assert keys.authenticate(bearer) == "limited"
    with pytest.raises(RateLimited) as failure:
        keys.authenticate(bearer)
    assert failure.value.headers["Retry-After"] == "30"
    assert keys.authenticate(f"Bearer {EXCEL_KEY}") == "other"
    clock.advance(29)
    with pytest.raises(RateLimited):
        keys.authenticate(bearer)
    clock.advance(1)
    assert keys.authenticate(bearer) == "limited"
    clock.advance(3600)
    assert keys.authenticate(bearer) == "limited"
    assert keys.authenticate(bearer) == "limited"
    with pytest.raises(RateLimited):
        keys.authenticate(bearer)


async def test_hash_key_output_authenticates(stand_in, start_proxy):
    """The line `insights-proxy hash-key` prints, put in [[clients]], accepts that key."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("INSIGHTS_PROXY_")}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "proxy", "hash-key"], input=GRAFANA_KEY + "\n",
        capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    key_hash = result.stdout.strip()
    assert GRAFANA_KEY not in result.stdout
    proxy = await start_proxy(proxy_config(stand_in, clients=[
        {"name": "cli", "key_hash": key_hash}]))
    response, _ = await proxy.query(ORGS_QUERY, headers={"Authorization": f"Bearer {GRAFANA_KEY}"})
    assert response.status == 200


# -- Network exposure --------------------------------------------------------------------------


def base_table(**server: Any) -> dict[str, Any]:
    return {"oauth": {"client_id": "client-a", "client_secret": "s3cret-value-001"},
            "server": server}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "proxy.example.com",
                                  "::ffff:127.0.0.1"])
def test_non_loopback_refused_without_keys(host):
    """Listening off loopback needs [[clients]] or server.allow_anonymous_network = true."""
    with pytest.raises(ConfigError) as failure:
        build_settings(base_table(host=host), use_environment=False)
    message = str(failure.value)
    assert f"server.host: {host!r} is not a loopback address" in message
    assert "[[clients]]" in message
    assert "server.allow_anonymous_network = true" in message


def test_non_loopback_accepted_with_keys_or_flag():
    """Client keys or the explicit flag make a non-loopback address acceptable."""
    keyed = base_table(host="0.0.0.0")
    keyed["clients"] = [{"name": "grafana", "key_hash": hash_client_key(GRAFANA_KEY)}]
    assert build_settings(keyed, use_environment=False).server.host == "0.0.0.0"
    flagged = base_table(host="0.0.0.0", allow_anonymous_network=True)
    assert build_settings(flagged, use_environment=False).server.allow_anonymous_network


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_nothing(host):
    """Loopback addresses need neither client keys nor the flag."""
    assert build_settings(base_table(host=host), use_environment=False).server.host == host


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_serve_non_loopback_exits_2(tmp_path):
    """`serve` with host 0.0.0.0 and no keys exits 2 with the reason and opens no port."""
    port, admin_port = free_port(), free_port()
    path = write_config(tmp_path / "proxy.toml", {
        "server": {"host": "0.0.0.0", "port": port},
        "admin": {"port": admin_port},
        "oauth": {"client_id": "client-a", "client_secret_file": "secret.txt"},
    })
    (tmp_path / "secret.txt").write_text("s3cret-value-from-file\n")
    remember_secret("s3cret-value-from-file")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("INSIGHTS_PROXY_")}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "proxy", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "server.allow_anonymous_network" in result.stderr
    assert "s3cret-value-from-file" not in result.stderr + result.stdout
    for number in (port, admin_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", number), timeout=1).close()


# -- Only the configured upstream --------------------------------------------------------------


TRICK_TARGETS = [
    "//127.0.0.1:{canary}/query-api",
    "//127.0.0.1:{canary}",
    "http://127.0.0.1:{canary}/query-api",
    "https://127.0.0.1:{canary}/query-api",
    "http://localhost/query-api",
    "/query-api/../query-api",
    "/./query-api",
    "/query-api/.",
    "/query-api/",
    "/%2e%2e/query-api",
    "/%2E/query-api",
    "/query-api%2f",
    "/query-api%2F..%2F..%2F127.0.0.1:{canary}",
    "/query-api/%2e%2e/",
    "/query-api;jsessionid=1",
    "/query-api%00",
    "/query-api%20",
    "/query-api%23",
    "/Query-Api",
    "/QUERY-API",
    "/query-api\\..\\",
    "/query%2dapi",
    "/%71uery-api",
    "*",
    "127.0.0.1:{canary}",
    "@127.0.0.1:{canary}/query-api",
]


@pytest.mark.parametrize("method", ["GET", "POST", "CONNECT", "OPTIONS"])
@pytest.mark.parametrize("target", TRICK_TARGETS)
async def test_path_tricks_never_reach_elsewhere(proxy, stand_in, canary, target, method):
    """Absolute, authority and dot-segment targets are 400 or 404 and never reach the canary."""
    request_target = target.format(canary=canary.port)
    if method == "GET" and request_target.startswith("/"):
        request_target += "?query=" + quote(ORGS_QUERY, safe="")
    raw = await exchange(port_of(proxy), request_bytes(
        request_target, method=method, headers=json_headers(),
        body=ORGS_BODY if method == "POST" else None))
    assert status_of(raw) in (400, 404), raw[:300]
    assert canary.connections == 0
    assert stand_in.stats["insights_requests"] == 0


async def test_absolute_form_with_canary_host_rejected(proxy, stand_in, canary):
    """An absolute-form target naming the canary, with a matching Host, goes nowhere."""
    authority = f"127.0.0.1:{canary.port}"
    for host in (authority, "localhost"):
        raw = await exchange(port_of(proxy), request_bytes(
            f"http://{authority}/query-api", host=host, headers=json_headers(),
            body=ORGS_BODY))
        assert status_of(raw) in (403, 404)
    assert canary.connections == 0
    assert stand_in.stats["insights_requests"] == 0


async def test_forwarding_headers_ignored(proxy, stand_in, canary):
    """X-Forwarded-Host, Forwarded and URL-override headers neither redirect nor leak."""
    authority = f"127.0.0.1:{canary.port}"
    headers = json_headers(**{
        "X-Forwarded-Host": authority, "X-Forwarded-Proto": "http",
        "Forwarded": f"host={authority};proto=http", "X-Original-URL": f"http://{authority}/",
        "X-Rewrite-URL": f"http://{authority}/", "X-Host": authority,
        "X-HTTP-Method-Override": "DELETE",
    })
    raw = await exchange(port_of(proxy), request_bytes(headers=headers, body=ORGS_BODY))
    assert status_of(raw) == 200
    assert canary.connections == 0
    recorded = stand_in.state.recorded[-1]
    assert recorded.headers["Host"] == URL(stand_in.base).raw_authority
    sent = {name.lower() for name in recorded.headers}
    for name in ("x-forwarded-host", "forwarded", "x-original-url", "x-rewrite-url", "x-host",
                 "x-http-method-override"):
        assert name not in sent


async def test_redirect_to_canary_not_followed(stand_in, start_proxy, canary, aiohttp_server):
    """A 3xx pointing at another host is returned as is, and that host gets no connection."""
    location = f"http://127.0.0.1:{canary.port}/steal"

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": location})

    app = web.Application()
    app.router.add_post("/q", redirect)
    app.router.add_post("/oauth2/token", redirect)
    server = await aiohttp_server(app)
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": str(server.make_url("/q"))}))
    response = await proxy.post({"query": ORGS_QUERY}, allow_redirects=False)
    assert response.status == 307
    assert response.headers["Location"] == location

    raw = proxy_config(stand_in)
    raw["oauth"]["token_url"] = str(server.make_url("/oauth2/token"))
    redirected_token = await start_proxy(raw)
    response, body = await redirected_token.query(ORGS_QUERY)
    assert response.status in (502, 503)
    assert error_code(body).startswith("TOKEN_ENDPOINT")
    assert canary.connections == 0


# -- Limits: body, URL, headers ----------------------------------------------------------------


@pytest.fixture
async def small_proxy(stand_in, start_proxy):
    """A proxy with small limits: 1000-byte bodies, 1024-byte URLs, 2048 bytes of headers."""
    return await start_proxy(proxy_config(stand_in, server={
        "port": 0, "max_body_bytes": 1000, "max_url_bytes": 1024, "max_header_bytes": 2048}))


def padded(size: int) -> bytes:
    """A valid GraphQL request body padded with JSON whitespace to exactly `size` bytes."""
    return ORGS_BODY + b" " * (size - len(ORGS_BODY))


def chunked(body: bytes, size: int = 300) -> bytes:
    pieces = [body[offset:offset + size] for offset in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


async def test_body_limit_exact_boundary(small_proxy, stand_in):
    """A body of exactly max_body_bytes passes and one byte more is 413, framed either way."""
    port = port_of(small_proxy)
    exact = await exchange(port, request_bytes(headers=json_headers(), body=padded(1000)))
    assert status_of(exact) == 200
    exact_chunked = await exchange(port, request_bytes(
        headers=json_headers(**{"Transfer-Encoding": "chunked"}), body=chunked(padded(1000))))
    assert status_of(exact_chunked) == 200
    assert stand_in.stats["insights_requests"] == 1

    over = await exchange(port, request_bytes(headers=json_headers(), body=padded(1001)))
    assert status_of(over) == 413
    assert "server.max_body_bytes" in error_message(body_of(over))
    over_chunked = await exchange(port, request_bytes(
        headers=json_headers(**{"Transfer-Encoding": "chunked"}), body=chunked(padded(1001))))
    assert status_of(over_chunked) == 413
    assert error_code(body_of(over_chunked)) == "PAYLOAD_TOO_LARGE"
    assert stand_in.stats["insights_requests"] == 1


async def test_body_declared_huge_rejected_unread(small_proxy, stand_in):
    """A Content-Length over the limit gets 413 before the body is sent."""
    head = request_bytes(headers=json_headers(**{"Content-Length": str(10 ** 12)}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_proxy))
    try:
        writer.write(head + b"{")
        await writer.drain()
        raw = await asyncio.wait_for(reader.readuntil(b"}]}"), 2.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status_of(raw) == 413
    assert "1000000000000 bytes" in error_message(body_of(raw))
    assert stand_in.stats["insights_requests"] == 0


async def test_body_compression_bomb_413(stand_in, start_proxy):
    """A small gzip body that inflates past max_body_bytes is 413, not buffered whole."""
    proxy = await start_proxy(proxy_config(stand_in, server={"port": 0,
                                                             "max_body_bytes": 65536}))
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b'{"query": "{ listOrganizations { id } }", "x": "')
    for _ in range(64):
        bomb += compressor.compress(b" " * 1_000_000)
    bomb += compressor.compress(b'"}') + compressor.flush()
    assert len(bomb) < 65536
    raw = await exchange(port_of(proxy), request_bytes(
        headers=json_headers(**{"Content-Encoding": "gzip"}), body=bomb))
    assert status_of(raw) == 413
    assert stand_in.stats["insights_requests"] == 0


async def test_body_invalid_encoding_400(small_proxy, stand_in, access_log):
    """A body that does not decode as its Content-Encoding is 400, not an internal error."""
    raw = await exchange(port_of(small_proxy), request_bytes(
        headers=json_headers(**{"Content-Encoding": "gzip"}), body=b"not gzip at all"))
    assert status_of(raw) == 400
    assert error_code(body_of(raw)) == "BAD_REQUEST"
    assert stand_in.stats["insights_requests"] == 0
    assert [line["status"] for line in request_lines(access_log)] == [400]


@pytest.mark.parametrize("coding", ["br-unknown", "x-gzip", "compress"])
async def test_body_unknown_content_encoding_415(small_proxy, stand_in, coding):
    """A content coding the proxy cannot decode is 415 naming it, never read as plain JSON."""
    raw = await exchange(port_of(small_proxy), request_bytes(
        headers=json_headers(**{"Content-Encoding": coding}), body=b'{"query": "{ a }"}'))
    assert status_of(raw) == 415
    assert error_code(body_of(raw)) == "UNSUPPORTED_MEDIA_TYPE"
    assert coding in error_message(body_of(raw))
    assert stand_in.stats["insights_requests"] == 0


async def test_body_expect_continue_answered(small_proxy):
    """A client that sends Expect: 100-continue gets the interim response, then the final one."""
    body = json.dumps({"query": "{ listOrganizations { id } }"}).encode()
    head = request_bytes(headers=json_headers(**{"Expect": "100-continue",
                                                  "Content-Length": str(len(body))}), body=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_proxy))
    try:
        writer.write(head)
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        await writer.drain()
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert status_of(final) == 200


async def test_body_expect_continue_not_sent_when_rejected(small_proxy):
    """A request rejected on its headers gets the final status, without 100 Continue first."""
    head = request_bytes(headers=json_headers(**{"Expect": "100-continue",
                                                  "Content-Length": str(10 ** 9)}), body=None)
    raw = await exchange(port_of(small_proxy), head)
    assert status_of(raw) == 413
    assert b"100 Continue" not in raw


async def test_body_cut_short_not_an_internal_error(small_proxy, stand_in, caplog, access_log):
    """A client that disconnects mid-body is logged as 400 or 499, without a traceback."""
    head = request_bytes(headers=json_headers(**{"Content-Length": "500"}), body=None)
    await exchange(port_of(small_proxy), head + b'{"query": ', timeout_s=0.3)
    await wait_for(lambda: request_lines(access_log))
    assert [line["status"] for line in request_lines(access_log)] in ([400], [499])
    assert not [record for record in caplog.records if record.exc_info]
    assert stand_in.stats["insights_requests"] == 0


async def test_url_over_limit_414(small_proxy, stand_in):
    """A URL over max_url_bytes is 414 naming POST, and past twice the limit it is 400."""
    port = port_of(small_proxy)
    target = get_target() + "&padding=" + "a" * 1100
    raw = await exchange(port, request_bytes(target, method="GET"))
    assert status_of(raw) == 414
    body = body_of(raw)
    assert error_code(body) == "URI_TOO_LONG"
    assert "POST" in error_message(body)
    assert "server.max_url_bytes" in error_message(body)

    huge = await exchange(port, request_bytes(get_target() + "&padding=" + "a" * 5000,
                                              method="GET"))
    assert status_of(huge) == 400
    assert stand_in.stats["insights_requests"] == 0


async def test_headers_over_limit_431(small_proxy, stand_in):
    """One large header or many small ones are 431, and past the parser's limits 400."""
    port = port_of(small_proxy)
    one_big = await exchange(port, request_bytes(headers=json_headers(**{"X-Big": "x" * 3000}),
                                                 body=ORGS_BODY))
    assert status_of(one_big) == 431
    assert "server.max_header_bytes" in error_message(body_of(one_big))

    many = {f"X-Filler-{number}": "y" * 60 for number in range(40)}
    many_small = await exchange(port, request_bytes(headers=json_headers(**many),
                                                    body=ORGS_BODY))
    assert status_of(many_small) == 431
    assert error_code(body_of(many_small)) == "HEADERS_TOO_LARGE"

    huge = await exchange(port, request_bytes(headers=json_headers(**{"X-Big": "x" * 9000}),
                                              body=ORGS_BODY))
    assert status_of(huge) == 400
    too_many = {f"X-{number}": "1" for number in range(200)}
    counted = await exchange(port, request_bytes(headers=json_headers(**too_many),
                                                 body=ORGS_BODY))
    assert status_of(counted) == 400
    assert stand_in.stats["insights_requests"] == 0


# -- Framing and request smuggling -------------------------------------------------------------


STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] [0-9]{3} ")
SMUGGLED = b"GET " + get_target().encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
START = b"POST /query-api HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"

FRAMING_ATTACKS = {
    "content-length then chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"0\r\n\r\n",
    "chunked then content-length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                                   b"0\r\n\r\n",
    "two different lengths": b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "two equal lengths": b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "length with plus sign": b"Content-Length: +2\r\n\r\n{}",
    "length list": b"Content-Length: 2, 2\r\n\r\n{}",
    "negative length": b"Content-Length: -1\r\n\r\n{}",
    "hex length": b"Content-Length: 0x2\r\n\r\n{}",
    "xchunked": b"Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "identity coding": b"Transfer-Encoding: identity\r\n\r\n{}",
    "chunked twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\n{}\r\n0\r\n\r\n",
    "chunked not last": b"Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "space before colon": b"Transfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}",
    "tab in coding": b"Transfer-Encoding:\x0bchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "obsolete line folding": b"X-Folded: a\r\n  b\r\nContent-Length: 2\r\n\r\n{}",
    "bare CR in value": b"X-A: a\rb\r\nContent-Length: 2\r\n\r\n{}",
    "NUL in value": b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "chunk size with 0x": b"Transfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "chunk size overflow": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n"
                           b"0\r\n\r\n",
    "chunk size not hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk lines end in LF": b"Transfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n",
    "chunk data too long": b"Transfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("attack", FRAMING_ATTACKS)
async def test_framing_conflict_rejected_not_smuggled(proxy, stand_in, attack):
    """Conflicting or malformed framing is 400, the connection closes, the rest is not run."""
    raw = await exchange(port_of(proxy), START + FRAMING_ATTACKS[attack] + SMUGGLED)
    assert status_of(raw) == 400, raw[:300]
    assert len(STATUS_LINE.findall(raw)) == 1, "a second, smuggled request was answered"
    assert stand_in.stats["insights_requests"] == 0


async def test_framing_error_mid_body_goes_nowhere(proxy, stand_in):
    """Bad chunk framing after the headers were read is never forwarded, and others still work.

    aiohttp 3.14 does not pass a chunk error found after the handler started to the reading
    handler, so the request waits until the client gives up, and then ends without a response.
    """
    port = port_of(proxy)
    head = START + b"Transfer-Encoding: chunked\r\n\r\n"
    raw = await exchange(port, head, b"zz\r\n{}\r\n0\r\n\r\n" + SMUGGLED, pause_s=0.2,
                         timeout_s=0.5)
    assert b"200 OK" not in raw
    assert stand_in.stats["insights_requests"] == 0
    response, _ = await proxy.query(ORGS_QUERY)
    assert response.status == 200
    await wait_for(lambda: proxy.server.holder.current.in_flight == 0)
    assert stand_in.stats["insights_requests"] == 1


# -- GraphQL document limits -------------------------------------------------------------------


def nested(levels: int) -> str:
    return "{ " + "listOrganizations { " * levels + "id" + " }" * levels + " }"


def fragment_chain(length: int, leaf: str) -> str:
    """A chain of fragments that each spread the next one twice, expanding to 2^length leaves."""
    fragments = [f"fragment F{number} on Query {{ ...F{number + 1} ...F{number + 1} }}"
                 for number in range(length)]
    fragments.append(f"fragment F{length} on Query {{ {leaf} }}")
    return "{ ...F0 }\n" + "\n".join(fragments)


def aliased_fragment_tree(levels: int) -> str:
    """Fragments whose aliases multiply: each level spreads the next under two aliases."""
    fragments = [f"fragment F{number} on Organization {{ a: children {{ ...F{number + 1} }} "
                 f"b: children {{ ...F{number + 1} }} }}" for number in range(levels)]
    fragments.append(f"fragment F{levels} on Organization {{ id }}")
    return "{ listOrganizations { ...F0 } }\n" + "\n".join(fragments)


LIMIT_CASES = {
    "long": ("{ listOrganizations { id } }" + " " * 70000, "query.max_length"),
    "deep": (nested(21), "query.max_depth"),
    "very deep": (nested(1500), "query.max_depth"),
    "wide": ("{ " + " ".join(f"a{number}: listOrganizations {{ id }}" for number in range(51))
             + " }", "query.max_aliases"),
    "aliases through fragments": (aliased_fragment_tree(6), "query.max_aliases"),
    "many tokens": ("{ " + "id " * 20000 + "}", "query.max_length"),
}


@pytest.mark.parametrize("case", LIMIT_CASES)
async def test_document_over_limit_names_it(proxy, stand_in, case):
    """A document over a length, depth or alias limit is 400 QUERY_TOO_COMPLEX naming the key."""
    document, key = LIMIT_CASES[case]
    response, body = await proxy.query(document)
    assert response.status == 400
    assert error_code(body) == "QUERY_TOO_COMPLEX"
    assert key in error_message(body)
    assert stand_in.stats["insights_requests"] == 0


async def test_document_limits_apply_to_get(proxy, stand_in):
    """The same limits hold for documents sent in the URL."""
    async with proxy.session.get(proxy.url, params={"query": nested(21)}) as response:
        body = await response.json()
    assert response.status == 400
    assert "query.max_depth" in error_message(body)
    assert stand_in.stats["insights_requests"] == 0


async def test_document_fragment_doubling_measured_fast(proxy, stand_in):
    """Fragments that double at each step are measured in linear time, not 2^n steps."""
    started = time.monotonic()
    response, body = await asyncio.wait_for(proxy.query(fragment_chain(40, "x: __typename")), 5)
    assert time.monotonic() - started < 2
    assert response.status == 400
    assert f"uses {2 ** 40} aliases" in error_message(body)
    assert "query.max_aliases" in error_message(body)
    assert stand_in.stats["insights_requests"] == 0

    started = time.monotonic()
    response, _ = await asyncio.wait_for(proxy.query(fragment_chain(40, "__typename")), 5)
    assert time.monotonic() - started < 2
    assert response.status == 200


async def test_document_deep_variables_400(proxy, stand_in):
    """Variables nested past Python's recursion limit are 400, not an internal error."""
    body = b'{"query": "{ listOrganizations { id } }", "variables": {"v": ' \
        + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    async with proxy.session.post(proxy.url, data=body,
                                  headers={"Content-Type": "application/json"}) as response:
        answer = await response.json()
    assert response.status == 400
    assert error_code(answer) == "BAD_REQUEST"
    assert stand_in.stats["insights_requests"] == 0


# -- TLS ---------------------------------------------------------------------------------------


def write_test_pki(folder: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for 127.0.0.1, and return the (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "insights-proxy test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return ca_path, cert_path, key_path


TLS_TOKEN = "tls-endpoint-access-token-0123456789"


class TLSEndpoints:
    """An HTTPS server on 127.0.0.1 with an Insights route, a token and a revoke endpoint."""

    def __init__(self, ca_path: Path, base: str, runner: web.AppRunner) -> None:
        self.ca_path = ca_path
        self.base = base
        self.runner = runner
        self.hits: dict[str, int] = {"/q": 0, "/oauth2/token": 0, "/oauth2/revoke": 0}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if request.path == "/oauth2/token":
            return web.json_response({"access_token": TLS_TOKEN, "token_type": "Bearer",
                                      "expires_in": 3600})
        if request.path == "/oauth2/revoke":
            return web.Response(status=200)
        return web.json_response({"data": {"listOrganizations": [{"id": "tls"}]}})


@pytest.fixture
async def tls_endpoints(tmp_path) -> AsyncIterator[TLSEndpoints]:
    ca_path, cert_path, key_path = write_test_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    remember_secret(TLS_TOKEN)
    app = web.Application()
    runner = web.AppRunner(app)
    endpoints = TLSEndpoints(ca_path, "", runner)
    for path in endpoints.hits:
        app.router.add_post(path, endpoints.handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    endpoints.base = f"https://127.0.0.1:{runner.addresses[0][1]}"
    yield endpoints
    await runner.cleanup()


async def test_tls_self_signed_upstream_rejected(stand_in, start_proxy, tls_endpoints):
    """An upstream whose certificate is not trusted is 502 UPSTREAM_UNAVAILABLE, unsent."""
    proxy = await start_proxy(proxy_config(stand_in,
                                           upstream={"url": f"{tls_endpoints.base}/q"}))
    response, body = await proxy.query(ORGS_QUERY)
    assert response.status == 502
    assert error_code(body) == "UPSTREAM_UNAVAILABLE"
    assert "Certificate" in error_message(body)
    assert tls_endpoints.hits["/q"] == 0


async def test_tls_ca_file_trusts_upstream(stand_in, start_proxy, tls_endpoints):
    """With tls.ca_file naming its CA, the same upstream responds through the proxy."""
    proxy = await start_proxy(proxy_config(stand_in,
                                           upstream={"url": f"{tls_endpoints.base}/q"},
                                           tls={"ca_file": str(tls_endpoints.ca_path)}))
    response, body = await proxy.query(ORGS_QUERY)
    assert response.status == 200
    assert body == {"data": {"listOrganizations": [{"id": "tls"}]}}
    assert tls_endpoints.hits["/q"] == 1


async def test_tls_self_signed_token_endpoint_rejected(stand_in, start_proxy, tls_endpoints):
    """An untrusted token endpoint never receives the client secret, but with the CA it does."""
    raw = proxy_config(stand_in)
    raw["oauth"]["token_url"] = f"{tls_endpoints.base}/oauth2/token"
    proxy = await start_proxy(raw)
    response, body = await proxy.query(ORGS_QUERY)
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert tls_endpoints.hits["/oauth2/token"] == 0

    trusting = await start_proxy({**raw, "tls": {"ca_file": str(tls_endpoints.ca_path)}})
    assert (await trusting.server.holder.current.tokens.get()).value == TLS_TOKEN
    assert tls_endpoints.hits["/oauth2/token"] >= 1


async def test_tls_self_signed_revoke_endpoint_rejected(stand_in, start_proxy, tls_endpoints):
    """An untrusted revoke endpoint never receives the token, and the revoke reports it."""
    raw = proxy_config(stand_in)
    raw["oauth"]["revoke_url"] = f"{tls_endpoints.base}/oauth2/revoke"
    proxy = await start_proxy(raw)
    response, _ = await proxy.query(ORGS_QUERY)
    assert response.status == 200
    async with proxy.session.post(proxy.admin_url + "/admin/token/revoke") as answer:
        result = await answer.json()
    assert answer.status == 502
    assert result["revocation"]["ok"] is False
    assert "Certificate" in result["revocation"]["detail"]
    assert tls_endpoints.hits["/oauth2/revoke"] == 0


def test_tls_no_option_disables_verification(tmp_path):
    """No key turns verification off, https to 127.0.0.1 is valid, and a bad CA file is named."""
    base = base_table()
    for section in ({"verify": False}, {"insecure": True}, {"verify_ssl": False}):
        with pytest.raises(ConfigError) as failure:
            build_settings({**base, "tls": section}, use_environment=False)
        assert "unknown key" in str(failure.value)
    https_loopback = {**base, "upstream": {"url": "https://127.0.0.1:8443/q"},
                      "oauth": {**base["oauth"], "token_url": "https://127.0.0.1:8443/t",
                                "revoke_url": "https://[::1]:8443/r"}}
    assert build_settings(https_loopback, use_environment=False).upstream.url.startswith("https")
    with pytest.raises(ConfigError) as failure:
        build_settings({**base, "upstream": {"url": "http://insights.example.com/q"}},
                       use_environment=False)
    assert "upstream.url" in str(failure.value)
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ConfigError) as failure:
        build_settings({**base, "tls": {"ca_file": str(not_pem)}}, use_environment=False)
    assert f"tls.ca_file: {str(not_pem)!r} cannot be loaded" in str(failure.value)


# -- Secrets -----------------------------------------------------------------------------------


SECRET = "hunter2-client-secret-value"
ADMIN_TOKEN = "admin-token-for-security-tests"


def test_secret_masked_in_repr_str_and_dumps():
    """The client secret and admin token mask themselves in repr, str, f-strings and JSON."""
    remember_secret(SECRET)
    remember_secret(ADMIN_TOKEN)
    settings = build_settings({"oauth": {"client_id": "a", "client_secret": SECRET},
                               "admin": {"token": ADMIN_TOKEN}}, use_environment=False)
    renderings = [repr(settings), str(settings), repr(settings.oauth), str(settings.oauth),
                  f"{settings.oauth.client_secret}", f"{settings.admin.token!r}",
                  settings.model_dump_json(), json.dumps(settings.model_dump(), default=str)]
    for text in renderings:
        assert SECRET not in text
        assert ADMIN_TOKEN not in text
    assert settings.oauth.client_secret.get_secret_value() == SECRET


def test_secret_masked_in_config_errors():
    """A configuration error about a secret key shows it masked."""
    remember_secret(SECRET)
    with pytest.raises(ConfigError) as failure:
        build_settings({"oauth": {"client_id": "a", "client_secret": [SECRET]},
                        "admin": {"token": {"value": ADMIN_TOKEN}}}, use_environment=False)
    text = f"{failure.value} {failure.value!r} {failure.value.problems}"
    assert "oauth.client_secret" in text
    assert SECRET not in text
    assert ADMIN_TOKEN not in text


def raise_while_holding(secret: str) -> None:
    held_secret = secret  # noqa: F841 - a local that a locals-rendering traceback would print
    raise RuntimeError("fault while holding a secret")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_secret_not_in_rendered_traceback(log_format):
    """A logged traceback is rendered without local variables, so held secrets stay out."""
    remember_secret(SECRET)
    try:
        raise_while_holding(SECRET)
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("insights_proxy.access", logging.ERROR, __file__, 0,
                               "request.failed", (), exc_info)
    configure_logging(log_format, "debug")
    try:
        handler = next(handler for handler in logging.getLogger().handlers
                       if getattr(handler, "_insights_proxy", False))
        rendered = handler.format(record)
    finally:
        configure_logging("json", "debug")
    assert "raise_while_holding" in rendered
    assert "RuntimeError" in rendered
    assert "held_secret" not in rendered
    assert SECRET not in rendered


async def test_admin_answers_contain_no_secret(stand_in, start_proxy, tmp_path):
    """No admin response contains the client secret, the admin token or an access token."""
    remember_secret(ADMIN_TOKEN)
    raw = proxy_config(stand_in, admin={"port": 0, "token": ADMIN_TOKEN})
    path = write_config(tmp_path / "proxy.toml", raw)
    proxy = await start_proxy(path=path)
    await proxy.query(ORGS_QUERY)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    texts = []
    for method, route in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/admin/token"),
                          ("POST", "/admin/token/refresh"), ("POST", "/admin/token/revoke"),
                          ("POST", "/admin/cache/purge"), ("POST", "/admin/reload"),
                          ("GET", "/metrics"), ("GET", "/admin/nothing")]:
        async with proxy.session.request(method, proxy.admin_url + route,
                                         headers=headers) as response:
            texts.append(await response.text() + json.dumps(dict(response.headers)))
    async with proxy.session.get(proxy.admin_url + "/admin/token") as response:
        texts.append(await response.text() + json.dumps(dict(response.headers)))
    forbidden = [stand_in.settings.client_secret, ADMIN_TOKEN, *stand_in.issued_tokens()]
    assert len(stand_in.issued_tokens()) >= 2
    for text in texts:
        for value in forbidden:
            assert value not in text


def test_serve_accepts_no_secret_arguments():
    """`serve` has no option that takes a secret, and passing one is a usage error (exit 2)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("INSIGHTS_PROXY_")}
    command = [sys.executable, "-m", "proxy", "serve"]
    help_text = subprocess.run([*command, "--help"], capture_output=True, text=True,
                               timeout=30, env=env).stdout
    options = {word.rstrip(",") for word in help_text.split() if word.startswith("-")}
    assert options <= {"-h", "--help", "--config"}
    for flag in ("--client-secret", "--client_secret", "--token", "--admin-token"):
        result = subprocess.run([*command, flag, "x"], capture_output=True, text=True,
                                timeout=30, env=env)
        assert result.returncode == 2, flag


def test_config_readable_admin_token_warns(tmp_path):
    """A config file holding the admin token and readable by others produces a warning."""
    remember_secret(ADMIN_TOKEN)
    path = write_config(tmp_path / "proxy.toml", {
        "oauth": {"client_id": "a", "client_secret_file": "secret.txt"},
        "admin": {"token": ADMIN_TOKEN}})
    (tmp_path / "secret.txt").write_text("file-secret-value-1\n")
    remember_secret("file-secret-value-1")
    path.chmod(0o640)
    warnings = load_settings(path).warnings
    assert len(warnings) == 1
    assert "chmod 600" in warnings[0]
    assert ADMIN_TOKEN not in warnings[0]
    path.chmod(0o600)
    assert load_settings(path).warnings == []


async def test_cors_headers_on_key_errors(stand_in, start_proxy):
    """An allowed origin can read a 401 answer: CORS headers come with errors too."""
    from proxy.security import hash_client_key

    raw = proxy_config(stand_in, server={"port": 0,
                                          "allowed_origins": ["http://localhost:3000"]},
                       clients=[{"name": "web", "key_hash": hash_client_key("w" * 32)}])
    proxy = await start_proxy(raw)
    async with proxy.session.post(proxy.url, json={"query": "{ a }"},
                                  headers={"Origin": "http://localhost:3000"}) as response:
        await response.read()
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
