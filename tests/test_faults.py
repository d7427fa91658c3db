"""Fault tolerance: token endpoint outages, clock jumps, broken upstreams, disconnects, shutdown.

Each test drives the stand-in's fault controls (`POST /_standin/faults`) or a small scripted
server on a loopback socket. Tests with a `FakeClock` share it between the proxy and the
stand-in, so token lifetimes and backoff delays pass without waiting. The token manager's
background retry runs on the real event loop timer. It starts an attempt only once the injected
clock has passed the backoff, so with a fake clock the attempts happen when a test advances the
clock and sends a request.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import build_settings
from proxy.errors import TokenEndpointError, TokenEndpointUnavailable
from proxy.standin.insights import FIXTURE_ORG
from proxy.tokens import TokenManager

from .conftest import FakeClock, SAMPLE_QUERY, proxy_config, remember_secret, wait_for
from .conftest import ENDPOINT_LINE, Process, config_for

ROOT = Path(__file__).resolve().parent.parent


def org_variables(**extra: Any) -> dict[str, Any]:
    return {"org": {"orgId": FIXTURE_ORG.uuid}, **extra}


def error_code(body: dict) -> str:
    return body["errors"][0]["extensions"]["code"]


async def set_faults(stand_in, **faults: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stand_in.base}/_standin/faults", json=faults) as response:
            assert response.status == 200, await response.text()


async def clear_faults(stand_in) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{stand_in.base}/_standin/faults") as response:
            assert response.status == 200, await response.text()


async def admin_get(proxy, path: str) -> tuple[int, dict]:
    async with proxy.session.get(f"{proxy.admin_url}{path}") as response:
        return response.status, await response.json()


async def timed_query(proxy, **variables: Any) -> tuple[aiohttp.ClientResponse, Any, float]:
    started = time.monotonic()
    response, body = await proxy.query(SAMPLE_QUERY, org_variables(**variables))
    return response, body, time.monotonic() - started


def token_manager(proxy) -> TokenManager:
    return proxy.server.holder.current.tokens


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- token endpoint outages ----------------------------------------------------------------



async def start_uncached(start_stand_in, start_proxy, token_lifetime_s: int):
    """Start a stand-in and an uncached proxy that share one fake clock."""
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=token_lifetime_s, clock=clock)
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}), clock=clock)
    return clock, stand_in, proxy

async def test_outage_with_valid_token_invisible(start_stand_in, start_proxy):
    """While the held token is valid, failed refreshes stay in the background: every query is 200."""
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=101, clock=clock)
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0},
                                           oauth={"refresh_margin_s": 20}), clock=clock)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    first = token_manager(proxy).current()

    await set_faults(stand_in, token_endpoint="down")
    clock.advance(85)  # 15 s of 100 usable seconds left: inside the 20 s refresh margin
    statuses = []
    for number in range(20):
        response, _, _ = await timed_query(proxy, n=number)
        statuses.append(response.status)
        await asyncio.sleep(0.01)  # let the background refresh run
        clock.advance(0.5)

    assert statuses == [200] * 20
    assert token_manager(proxy).current().value == first.value
    stats = stand_in.stats
    assert stats["token_errors"] >= 1
    assert stats["token_requests"] <= 6  # backoff: not one attempt per request
    assert stats["expired_tokens_presented"] == 0
    status, token = await admin_get(proxy, "/admin/token")
    assert token["state"] == "failing"
    assert token["consecutive_failures"] >= 1
    status, ready = await admin_get(proxy, "/readyz")
    assert status == 200


async def test_outage_after_expiry_fails_fast(start_stand_in, start_proxy):
    """Once the token has expired during an outage, queries get 503 with Retry-After at once."""
    clock, stand_in, proxy = await start_uncached(start_stand_in, start_proxy, 101)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    insights_before = stand_in.stats["insights_requests"]

    await set_faults(stand_in, token_endpoint="down")
    clock.advance(101)
    for number in range(10):
        response, body, elapsed = await timed_query(proxy, n=number)
        assert response.status == 503
        assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert elapsed < 1.0
        clock.advance(0.1)

    stats = stand_in.stats
    assert stats["insights_requests"] == insights_before
    assert stats["expired_tokens_presented"] == 0
    status, ready = await admin_get(proxy, "/readyz")
    assert status == 503
    assert ready["code"] == "TOKEN_ENDPOINT_UNAVAILABLE"


async def test_outage_token_not_sent_near_expiry(start_stand_in, start_proxy):
    """In its last half second the token is no longer sent, so it cannot expire on the way."""
    clock, stand_in, proxy = await start_uncached(start_stand_in, start_proxy, 101)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    token = token_manager(proxy).current()
    await set_faults(stand_in, token_endpoint="down")

    clock.now = token.expires_at - 0.7
    response, _, _ = await timed_query(proxy, n=1)
    assert response.status == 200
    insights_before = stand_in.stats["insights_requests"]
    clock.now = token.expires_at - 0.3
    response, body, _ = await timed_query(proxy, n=2)
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert stand_in.stats["insights_requests"] == insights_before
    assert stand_in.stats["expired_tokens_presented"] == 0


async def test_outage_first_failure_has_retry_after(start_stand_in, start_proxy):
    """The query whose own token attempt fails also gets Retry-After, not only those after it."""
    clock, stand_in, proxy = await start_uncached(start_stand_in, start_proxy, 101)
    await wait_for(lambda: token_manager(proxy).current() is not None)
    await set_faults(stand_in, token_endpoint="error")
    clock.advance(101)
    response, body, _ = await timed_query(proxy)
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    assert stand_in.stats["token_errors"] == 1


async def test_outage_slow_endpoint_no_hang(start_stand_in, start_proxy):
    """A token request that hangs delays queries by at most 2 s; later ones get 503 at once."""
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=101, clock=clock)
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0},
                                           oauth={"timeout_s": 5}), clock=clock)
    await wait_for(lambda: token_manager(proxy).current() is not None)
    await set_faults(stand_in, token_endpoint="slow", token_latency_ms=3000)
    clock.advance(101)

    first = asyncio.ensure_future(timed_query(proxy))
    await wait_for(lambda: stand_in.stats["token_requests"] == 2)
    await asyncio.sleep(0.1)
    for number in range(5):
        response, body, elapsed = await timed_query(proxy, n=number)
        assert response.status == 503
        assert response.headers["Retry-After"]
        assert elapsed < 2.5
    response, body, elapsed = await first
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert "has not responded within 2 s" in body["errors"][0]["message"]
    assert 1.5 < elapsed < 2.5

    # The attempt runs on past its 2 s, and a query arriving now is not held at all.
    response, _, elapsed = await timed_query(proxy, n=98)
    assert response.status == 503
    assert elapsed < 1.0
    await wait_for(lambda: token_manager(proxy).current() is not None, timeout=5.0)
    response, _, _ = await timed_query(proxy, n=99)
    assert response.status == 200
    assert stand_in.stats["token_requests"] == 2


async def test_outage_backoff_bounds_attempts(start_stand_in, start_proxy):
    """40 queries spread over a 30 s outage cause only a handful of token attempts."""
    clock = FakeClock()
    stand_in = await start_stand_in(clock=clock)
    await set_faults(stand_in, token_endpoint="down")
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}), clock=clock)
    await wait_for(lambda: token_manager(proxy).consecutive_failures == 1)

    retry_after = []
    for number in range(40):
        clock.advance(0.75)
        response, body, elapsed = await timed_query(proxy, n=number)
        assert response.status == 503
        assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
        assert elapsed < 1.0
        retry_after.append(int(response.headers["Retry-After"]))

    # Delays of 2, 4, 8 and 16 s, each cut by up to a quarter by the jitter, fit 4 or 5
    # attempts into 30 s, the start-up attempt included.
    attempts = stand_in.stats["token_requests"]
    assert 4 <= attempts <= 5
    assert token_manager(proxy).consecutive_failures == attempts
    assert min(retry_after) >= 1
    assert max(retry_after) <= 32
    assert stand_in.stats["insights_requests"] == 0


async def test_outage_one_attempt_however_many_requests(start_stand_in, start_proxy):
    """200 concurrent queries during a failing attempt share it and all get 503."""
    stand_in = await start_stand_in()
    await set_faults(stand_in, token_endpoint="slow", token_latency_ms=2000)
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}, oauth={"timeout_s": 1}))
    started = time.monotonic()
    results = await asyncio.gather(*(proxy.query(SAMPLE_QUERY, org_variables(n=number))
                                     for number in range(200)))
    assert {response.status for response, _ in results} == {503}
    assert {error_code(body) for _, body in results} == {"TOKEN_ENDPOINT_UNAVAILABLE"}
    assert time.monotonic() - started < 3.0
    assert stand_in.stats["token_requests"] == 1


async def test_outage_recovery_by_background_retry(start_stand_in, start_proxy):
    """After the endpoint recovers, the background retry obtains a token with no request needed."""
    stand_in = await start_stand_in()
    await set_faults(stand_in, token_endpoint="down")
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}))
    await wait_for(lambda: token_manager(proxy).consecutive_failures == 1)

    await set_faults(stand_in, token_endpoint="up")
    # Still inside the first backoff delay (at least 1.5 s): the query fails fast.
    response, body, elapsed = await timed_query(proxy)
    assert response.status == 503
    assert elapsed < 1.0

    await wait_for(lambda: token_manager(proxy).current() is not None, timeout=4.0)
    status, ready = await admin_get(proxy, "/readyz")
    assert status == 200
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    stats = stand_in.stats
    assert stats["token_requests"] == 2
    assert stats["expired_tokens_presented"] == 0


@pytest.mark.parametrize("answer", [
    pytest.param("", id="empty"),
    pytest.param("<html><body>Maintenance</body></html>", id="html"),
    pytest.param(json.dumps({"token_type": "Bearer", "expires_in": 900}), id="no-access-token"),
    pytest.param(json.dumps({"access_token": "", "expires_in": 900}), id="empty-access-token"),
])
async def test_junk_token_answer_is_failure(stand_in, start_proxy, aiohttp_server, answer):
    """A 200 from the token endpoint without a usable access_token is a failure, never a token."""
    token_requests = []

    async def token(request: web.Request) -> web.Response:
        token_requests.append(request.path)
        return web.Response(status=200, text=answer, content_type="text/html")

    app = web.Application()
    app.router.add_post("/oauth2/token", token)
    server = await aiohttp_server(app)
    raw = proxy_config(stand_in)
    raw["oauth"]["token_url"] = str(server.make_url("/oauth2/token"))
    proxy = await start_proxy(raw)

    response, body, elapsed = await timed_query(proxy)
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert response.headers["Retry-After"]
    assert elapsed < 1.0
    assert len(token_requests) == 1
    assert token_manager(proxy).current() is None
    assert stand_in.stats["insights_requests"] == 0
    status, ready = await admin_get(proxy, "/readyz")
    assert status == 503
    assert "access_token" in ready["reason"] or "JSON" in ready["reason"]
    status, state = await admin_get(proxy, "/admin/token")
    assert state["state"] == "failing"


async def test_invalid_client_logged_once_backs_off(start_stand_in, start_proxy, caplog):
    """invalid_client is logged once, retried after tens of seconds, and shown by /readyz."""
    clock = FakeClock()
    stand_in = await start_stand_in(clock=clock)
    raw = proxy_config(stand_in)
    raw["oauth"]["client_secret"] = "not-the-secret-42"
    remember_secret("not-the-secret-42")
    proxy = await start_proxy(raw, clock=clock)
    await wait_for(lambda: token_manager(proxy).consecutive_failures == 1)

    for number in range(20):
        response, body, elapsed = await timed_query(proxy, n=number)
        assert response.status == 502
        assert error_code(body) == "TOKEN_ENDPOINT_ERROR"
        assert "invalid_client" in body["errors"][0]["message"]
        assert int(response.headers["Retry-After"]) >= 2
        assert elapsed < 1.0
        clock.advance(1)  # 20 s in all, under the shortest delay of 22.5 s

    assert stand_in.stats["token_requests"] == 1
    failures = [record.msg for record in caplog.records
                if isinstance(record.msg, dict) and record.msg.get("event") == "token.fetch_failed"]
    assert len(failures) == 1
    assert failures[0]["code"] == "TOKEN_ENDPOINT_ERROR"
    assert "invalid_client" in failures[0]["error"]
    assert "oauth.client_id" in failures[0]["error"]
    assert failures[0]["retry_in_s"] >= 22.5

    status, ready = await admin_get(proxy, "/readyz")
    assert status == 503
    assert ready["code"] == "TOKEN_ENDPOINT_ERROR"
    assert "invalid_client" in ready["reason"]

    clock.advance(11)  # past the longest first delay of 30 s
    response, _, _ = await timed_query(proxy, n=99)
    assert response.status == 502
    assert stand_in.stats["token_requests"] == 2


# -- backoff delays, measured on the token manager ------------------------------------------


def oauth_settings(token_url: str):
    raw = {
        "upstream": {"url": "http://127.0.0.1:9/q"},
        "oauth": {"token_url": token_url, "revoke_url": token_url, "client_id": "client-a",
                  "client_secret": "secret-a-1234"},
    }
    return build_settings(raw, use_environment=False).oauth


async def failure_delays(aiohttp_server, status: int, body: dict, count: int) -> list[float]:
    """Fail `count` token attempts in a row, each as soon as allowed; return each Retry-After."""
    attempts = []

    async def token(request: web.Request) -> web.Response:
        attempts.append(request.path)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/oauth2/token", token)
    server = await aiohttp_server(app)
    clock = FakeClock()
    delays = []
    async with aiohttp.ClientSession() as session:
        tokens = TokenManager(oauth_settings(str(server.make_url("/oauth2/token"))), session,
                              clock=clock)
        try:
            for _ in range(count):
                with pytest.raises((TokenEndpointError, TokenEndpointUnavailable)) as failure:
                    await tokens.get()
                delays.append(failure.value.retry_after_s)
                clock.advance(failure.value.retry_after_s + 0.001)
        finally:
            await tokens.close()
    assert len(attempts) == count
    return delays


async def test_backoff_transient_doubles_to_cap(aiohttp_server):
    """Transient failures back off from about 2 s, doubling, with jitter, up to 60 s."""
    delays = await failure_delays(aiohttp_server, 500, {"error": "server_error"}, 12)
    for attempt, delay in enumerate(delays):
        nominal = min(60.0, 2.0 * 2 ** attempt)
        assert 0.75 * nominal <= delay <= nominal, (attempt, delay)
    assert len({round(delay, 3) for delay in delays[6:]}) > 1  # jittered, not a fixed period


async def test_backoff_configuration_error_slower(aiohttp_server):
    """Configuration errors such as invalid_client back off from about 30 s up to 300 s."""
    delays = await failure_delays(aiohttp_server, 401, {"error": "invalid_client"}, 7)
    for attempt, delay in enumerate(delays):
        nominal = min(300.0, 30.0 * 2 ** attempt)
        assert 0.75 * nominal <= delay <= nominal, (attempt, delay)


# -- clock jumps -----------------------------------------------------------------------------


async def test_clock_jump_fetches_new_token(start_stand_in, start_proxy):
    """After the wall clock jumps hours ahead (sleep), the next query uses a new token."""
    clock, stand_in, proxy = await start_uncached(start_stand_in, start_proxy, 900)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    first = token_manager(proxy).current()

    clock.advance(3 * 3600)
    response, _, _ = await timed_query(proxy, n=1)
    assert response.status == 200
    assert token_manager(proxy).current().value != first.value
    stats = stand_in.stats
    assert stats["token_requests"] == 2
    assert stats["expired_tokens_presented"] == 0
    assert stats["insights_rejected"] == 0


async def test_clock_jump_during_outage_sends_nothing(start_stand_in, start_proxy):
    """A clock jump while the token endpoint is down gets 503, and no stale token goes upstream."""
    clock, stand_in, proxy = await start_uncached(start_stand_in, start_proxy, 900)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    insights_before = stand_in.stats["insights_requests"]

    await set_faults(stand_in, token_endpoint="down")
    clock.advance(3 * 3600)
    response, body, elapsed = await timed_query(proxy, n=1)
    assert response.status == 503
    assert error_code(body) == "TOKEN_ENDPOINT_UNAVAILABLE"
    assert elapsed < 1.0
    assert stand_in.stats["insights_requests"] == insights_before
    assert stand_in.stats["expired_tokens_presented"] == 0


async def test_clock_set_back_does_not_stretch_backoff(start_stand_in, start_proxy):
    """A wall clock set back an hour during the backoff still retries within the delay chosen."""
    clock = FakeClock()
    stand_in = await start_stand_in(clock=clock)
    await set_faults(stand_in, token_endpoint="down")
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0}), clock=clock)
    await wait_for(lambda: token_manager(proxy).consecutive_failures == 1)
    await set_faults(stand_in, token_endpoint="up")

    clock.advance(-3600)
    response, _, _ = await timed_query(proxy)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) <= 2
    clock.advance(2.1)
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    assert stand_in.stats["token_requests"] == 2


# -- upstream faults -------------------------------------------------------------------------


class RawUpstream:
    """An upstream on a raw socket that reads each request and misbehaves as its `mode` sets.

    Modes: `reset` closes the connection with a TCP reset before responding, `truncated` sends a
    Content-Length larger than the body it sends, `truncated_chunked` stops before the last
    chunk, and `ok` sends a complete 200.
    """

    BODY = b'{"data": {"listOrganizations": [{"id": "org-1"}]}}'

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/q"
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                if not await self._respond(writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter) -> bool:
        """Write the response for the mode and return whether the connection stays open."""
        if self.mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if self.mode == "truncated":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (len(self.BODY) + 100)
                         + self.BODY[:20])
            await writer.drain()
            return False
        if self.mode == "truncated_chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n%s\r\n" % (20, self.BODY[:20]))
            await writer.drain()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(self.BODY) + self.BODY)
        await writer.drain()
        return True


@pytest.fixture
async def raw_upstream():
    started: list[RawUpstream] = []

    async def start(mode: str) -> RawUpstream:
        upstream = await RawUpstream(mode).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        await upstream.close()


async def test_upstream_refused_502(stand_in, start_proxy):
    """A refused upstream connection gets 502 UPSTREAM_UNAVAILABLE and nothing is stored."""
    url = f"http://127.0.0.1:{free_port()}/q"
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": url}))
    for _ in range(2):
        response, body, elapsed = await timed_query(proxy)
        assert response.status == 502
        assert error_code(body) == "UPSTREAM_UNAVAILABLE"
        assert elapsed < 2.0
    assert proxy.server.holder.current.service.cache.stats() == (0, 0)


async def test_upstream_reset_502(stand_in, start_proxy, raw_upstream):
    """A connection reset before the response becomes 502 UPSTREAM_UNAVAILABLE."""
    upstream = await raw_upstream("reset")
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": upstream.url}))
    response, body, _ = await timed_query(proxy)
    assert response.status == 502
    assert error_code(body) == "UPSTREAM_UNAVAILABLE"
    assert upstream.requests == 1


@pytest.mark.parametrize("mode", ["truncated", "truncated_chunked"])
async def test_upstream_truncated_never_stored(stand_in, start_proxy, raw_upstream, mode):
    """A body cut short becomes 502; the partial body is neither passed on nor stored."""
    upstream = await raw_upstream(mode)
    proxy = await start_proxy(proxy_config(stand_in, upstream={"url": upstream.url}))
    for attempt in range(1, 3):
        response, body, _ = await timed_query(proxy)
        assert response.status == 502
        assert error_code(body) == "UPSTREAM_UNAVAILABLE"
        assert "cut short" in body["errors"][0]["message"]
        assert "listOrg" not in json.dumps(body)
        assert upstream.requests == attempt
    assert proxy.server.holder.current.service.cache.stats() == (0, 0)

    upstream.mode = "ok"
    response, body, _ = await timed_query(proxy)
    assert response.status == 200
    assert body == json.loads(RawUpstream.BODY)
    assert "stored" in response.headers["Cache-Status"]


async def test_upstream_slow_504_not_stored(stand_in, start_proxy):
    """No response within upstream.timeout_s is 504 UPSTREAM_TIMEOUT, on time; nothing is stored."""
    proxy = await start_proxy(proxy_config(stand_in, upstream={"timeout_s": 0.3}))
    await wait_for(lambda: token_manager(proxy).current() is not None)
    await set_faults(stand_in, insights_latency_ms=3000)
    response, body, elapsed = await timed_query(proxy)
    assert response.status == 504
    assert error_code(body) == "UPSTREAM_TIMEOUT"
    assert elapsed < 1.5
    assert proxy.server.holder.current.service.cache.stats() == (0, 0)


async def test_upstream_429_retry_after_passed(proxy, stand_in):
    """An upstream 429 passes through with its Retry-After and is not stored."""
    await set_faults(stand_in, insights_fail_next={"count": 1, "status": 429, "retry_after_s": 7})
    response, body, _ = await timed_query(proxy)
    assert response.status == 429
    assert response.headers["Retry-After"]
    assert "fwd=miss" in response.headers["Cache-Status"]
    assert "stored" not in response.headers["Cache-Status"]
    response, body, _ = await timed_query(proxy)
    assert response.status == 200
    assert stand_in.stats["insights_requests"] == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_upstream_5xx_passed_not_stored(proxy, stand_in, status):
    """Upstream 5xx responses pass through with their status and are never stored."""
    await set_faults(stand_in, insights_fail_next={"count": 2, "status": status})
    for _ in range(2):
        response, _, _ = await timed_query(proxy)
        assert response.status == status
        assert "stored" not in response.headers["Cache-Status"]
    response, _, _ = await timed_query(proxy)
    assert response.status == 200
    assert stand_in.stats["insights_requests"] == 3
    response, _, _ = await timed_query(proxy)
    assert response.headers["Cache-Status"].startswith("insights-proxy; hit")


# -- client disconnects ----------------------------------------------------------------------


async def test_disconnect_releases_upstream_connection(stand_in, start_proxy):
    """Clients that go away free their upstream connections, so a pool of 2 does not run dry."""
    proxy = await start_proxy(proxy_config(stand_in, cache={"ttl_s": 0},
                                           upstream={"max_connections": 2, "timeout_s": 60}))
    await wait_for(lambda: token_manager(proxy).current() is not None)
    await set_faults(stand_in, insights_latency_ms=30_000)

    leaving = aiohttp.ClientSession()
    requests = [asyncio.ensure_future(leaving.post(
        proxy.url, json={"query": SAMPLE_QUERY, "variables": org_variables(n=number)}))
        for number in range(4)]
    await wait_for(lambda: proxy.server.holder.current.in_flight == 4)
    await asyncio.sleep(0.2)  # two wait for the pool, two wait for the slow upstream
    for request in requests:
        request.cancel()
    await asyncio.gather(*requests, return_exceptions=True)
    await leaving.close()
    await wait_for(lambda: proxy.server.holder.current.in_flight == 0)

    await set_faults(stand_in, insights_latency_ms=0)
    response, _, elapsed = await timed_query(proxy, n=99)
    assert response.status == 200
    assert elapsed < 2.0


# -- shutdown ------------------------------------------------------------------------------------


async def serve_with_simulate(processes, tmp_path: Path, **server: Any) -> tuple[str, str, Process]:
    simulate = await processes("simulate", "--port", "0")
    base = (await simulate.wait_for_line(r"listening on (http://\S+)")).group(1)
    await simulate.wait_for_line("Ctrl-C")
    path = config_for(base, tmp_path, server={"port": 0, **server}, cache={"ttl_s": 0})
    serve = await processes("serve", "--config", str(path))
    url = (await serve.wait_for_line(ENDPOINT_LINE)).group(1)
    return base, url, serve


async def post_query(session: aiohttp.ClientSession, url: str, number: int) -> int:
    async with session.post(url, json={"query": SAMPLE_QUERY,
                                       "variables": {"n": number}}) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_drains_in_flight(processes, tmp_path, signum):
    """On a stop signal in-flight queries finish, new connections are refused, and exit is 0."""
    base, url, serve = await serve_with_simulate(processes, tmp_path)
    async with aiohttp.ClientSession() as session:
        assert await post_query(session, url, 0) == 200
        async with session.post(f"{base}/_standin/faults", json={"insights_latency_ms": 1500}):
            pass
        in_flight = [asyncio.ensure_future(post_query(session, url, number))
                     for number in range(1, 6)]
        await asyncio.sleep(0.5)
        serve.process.send_signal(signum)
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as late:
            with pytest.raises(aiohttp.ClientConnectionError):
                await post_query(late, url, 99)
        assert await asyncio.gather(*in_flight) == [200] * 5
    code, stderr = await serve.stop(None, timeout=10)
    assert code == 0, stderr[-2000:]
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "proxy.stopped" in events
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("drain_s", "at_least_s", "at_most_s"), [(1, 0.5, 4.0), (3, 2.5, 5.5)])
async def test_shutdown_drain_timeout_bounds_exit(processes, tmp_path, drain_s, at_least_s,
                                                  at_most_s):
    """A query slower than server.drain_timeout_s is cut after one drain, not two."""
    base, url, serve = await serve_with_simulate(processes, tmp_path, drain_timeout_s=drain_s)
    async with aiohttp.ClientSession() as session:
        assert await post_query(session, url, 0) == 200
        async with session.post(f"{base}/_standin/faults", json={"insights_latency_ms": 20_000}):
            pass
        slow = asyncio.ensure_future(post_query(session, url, 1))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        code, stderr = await serve.stop(None, timeout=15)
        elapsed = time.monotonic() - started
        results = await asyncio.gather(slow, return_exceptions=True)
    assert code == 0, stderr[-2000:]
    assert at_least_s < elapsed < at_most_s
    assert isinstance(results[0], aiohttp.ClientError)


async def test_shutdown_second_signal_exits_at_once(processes, tmp_path):
    """A second stop signal during the drain exits at once with status 1."""
    base, url, serve = await serve_with_simulate(processes, tmp_path, drain_timeout_s=30)
    async with aiohttp.ClientSession() as session:
        assert await post_query(session, url, 0) == 200
        async with session.post(f"{base}/_standin/faults", json={"insights_latency_ms": 20_000}):
            pass
        slow = asyncio.ensure_future(post_query(session, url, 1))
        await asyncio.sleep(0.5)
        serve.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        serve.process.send_signal(signal.SIGINT)
        code, stderr = await serve.stop(None, timeout=10)
        elapsed = time.monotonic() - started
        await asyncio.gather(slow, return_exceptions=True)
    assert code == 1
    assert elapsed < 2.0
    assert "proxy.forced_exit" in stderr


# -- the soak run, briefly -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_soak_smoke_counts_clean(tmp_path):
    """An 8 s soak with faults cycling reports no 500s and no expired tokens sent."""
    report_path = tmp_path / "soak.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "8", "--clients", "10",
        "--fault-period", "2", "--out", str(report_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(report_path.read_text())
    assert report["requests"] > 100
    assert report["status_500"] == 0
    assert report["expired_tokens_presented"] == 0
    assert report["client_errors"] == 0
    assert len(report["faults_applied"]) >= 4
    assert report["token_requests"] >= 2


async def test_readyz_not_ready_while_draining(stand_in, start_proxy):
    """During shutdown /readyz returns 503 so load balancers stop sending traffic."""
    from .conftest import proxy_config

    proxy = await start_proxy(proxy_config(stand_in))
    await proxy.query("{ listOrganizations { id } }")
    proxy.server.holder.draining = True
    async with proxy.session.get(proxy.admin_url + "/readyz") as response:
        body = await response.json()
    assert response.status == 503
    assert "shutting down" in body["reason"]
    proxy.server.holder.draining = False
