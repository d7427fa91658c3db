"""The token manager against the stand-in and against scripted token endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import build_settings
from proxy.errors import TokenEndpointError, TokenEndpointUnavailable
from proxy.tokens import EXPIRY_SAFETY_S, TokenManager

from .conftest import FakeClock, remember_secret


def oauth_settings(token_url: str, **overrides: Any):
    raw = {
        "upstream": {"url": "http://127.0.0.1:9/q"},
        "oauth": {"token_url": token_url, "revoke_url": token_url, "client_id": "client-a",
                  "client_secret": "secret-a-1234", **overrides},
    }
    return build_settings(raw, use_environment=False).oauth


class ScriptedTokenServer:
    """A token endpoint that responds from a list of (status, body) and records each request."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append((dict(request.headers), {k: str(v) for k, v in form.items()}))
        status, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")


@pytest.fixture
async def scripted(aiohttp_server):
    async def start(answers: list[tuple[int, Any]]):
        server = ScriptedTokenServer(answers)
        app = web.Application()
        app.router.add_post("/oauth2/token", server.handle)
        running = await aiohttp_server(app)
        server.url = str(running.make_url("/oauth2/token"))
        return server
    return start


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(value: str, **fields: Any) -> dict[str, Any]:
    remember_secret(value)
    return {"access_token": value, "token_type": "Bearer", **fields}


async def test_token_request_basic_auth_and_extra_params(scripted, session):
    """Every token request carries Basic authentication, the scope and the extra form fields."""
    server = await scripted([(200, bearer("tok-aaaaaaaa1", expires_in=2))])
    oauth = oauth_settings(server.url, scope="apim:api_manage", extra_params={"orgHandle": "acme"})
    clock = FakeClock()
    tokens = TokenManager(oauth, session, clock=clock)
    await tokens.get()
    clock.advance(5)
    await tokens.get()
    assert len(server.requests) == 2
    first, second = server.requests
    assert first == second
    headers, form = first
    assert headers["Authorization"].startswith("Basic ")
    assert form == {"grant_type": "client_credentials", "scope": "apim:api_manage",
                    "orgHandle": "acme"}


async def test_token_request_client_secret_post(scripted, session):
    """With client_secret_post the credentials travel as form fields, not as Basic."""
    server = await scripted([(200, bearer("tok-bbbbbbbb1", expires_in=900))])
    oauth = oauth_settings(server.url, auth_method="client_secret_post")
    await TokenManager(oauth, session).get()
    headers, form = server.requests[0]
    assert "Authorization" not in headers
    assert form["client_id"] == "client-a"
    assert form["client_secret"] == "secret-a-1234"


@pytest.mark.parametrize(("expires_in", "lifetime"), [
    (None, 900.0), ("300", 300.0), (120, 120.0), ("45.0", 45.0),
])
async def test_token_expires_in_variants(scripted, session, expires_in, lifetime):
    """A missing expires_in takes oauth.default_lifetime_s; a numeric string is read as a number."""
    fields = {} if expires_in is None else {"expires_in": expires_in}
    server = await scripted([(200, bearer("tok-cccccccc1", **fields))])
    oauth = oauth_settings(server.url, default_lifetime_s=900)
    clock = FakeClock()
    token = await TokenManager(oauth, session, clock=clock).get()
    assert token.expires_at - token.obtained_at == pytest.approx(lifetime - EXPIRY_SAFETY_S)


@pytest.mark.parametrize(("status", "body", "error"), [
    (200, {"token_type": "Bearer", "expires_in": 900}, TokenEndpointUnavailable),
    (200, "<html>maintenance</html>", TokenEndpointUnavailable),
    (200, "", TokenEndpointUnavailable),
    (200, {"access_token": "tok-dddd", "token_type": "mac", "expires_in": 900}, TokenEndpointError),
    (200, {"access_token": "tok-eeee", "token_type": "Bearer", "expires_in": "soon"},
     TokenEndpointUnavailable),
    (200, {"access_token": "tok-ffff", "token_type": "Bearer", "expires_in": -5},
     TokenEndpointUnavailable),
    (401, {"error_description": "Client credentials are invalid.", "error": "invalid_client"},
     TokenEndpointError),
    (400, {"no_error_member": True}, TokenEndpointUnavailable),
    (500, {"error_description": "Internal Server Error.", "error": "server_error"},
     TokenEndpointUnavailable),
])
async def test_token_unusable_answers_fail(scripted, session, status, body, error):
    """Responses without a usable Bearer token are failed fetches, never a token."""
    server = await scripted([(status, body)])
    tokens = TokenManager(oauth_settings(server.url), session)
    with pytest.raises(error):
        await tokens.get()
    assert tokens.current() is None


async def test_token_failure_not_sticky_but_backs_off(scripted, session):
    """After a failure requests fail fast until the backoff passes, then the next one retries."""
    server = await scripted([(500, {"error": "server_error"}), (200, bearer("tok-gggggggg1"))])
    clock = FakeClock()
    tokens = TokenManager(oauth_settings(server.url), session, clock=clock)
    with pytest.raises(TokenEndpointUnavailable):
        await tokens.get()
    for _ in range(20):
        with pytest.raises(TokenEndpointUnavailable) as failure:
            await tokens.get()
        assert failure.value.headers["Retry-After"]
    assert len(server.requests) == 1
    clock.advance(2.5)
    token = await tokens.get()
    assert token.fingerprint
    assert len(server.requests) == 2


async def test_token_invalid_client_backs_off_longer(scripted, session):
    """invalid_client is a configuration error, retried only after tens of seconds."""
    server = await scripted([(401, {"error_description": "x", "error": "invalid_client"})])
    clock = FakeClock()
    tokens = TokenManager(oauth_settings(server.url), session, clock=clock)
    with pytest.raises(TokenEndpointError):
        await tokens.get()
    clock.advance(15)
    with pytest.raises(TokenEndpointError):
        await tokens.get()
    assert len(server.requests) == 1
    assert tokens.status()["state"] == "failing"


async def test_token_cold_start_single_request(stand_in, session):
    """200 callers at a cold start cause exactly one token request."""
    from proxy.standin import token_url
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret)
    tokens = TokenManager(oauth, session)
    results = await asyncio.gather(*(tokens.get() for _ in range(200)))
    assert len({token.value for token in results}) == 1
    assert stand_in.stats["token_requests"] == 1


async def test_token_refreshed_before_expiry(start_stand_in, session):
    """Inside the refresh margin the old token keeps serving while one refresh runs."""
    from proxy.standin import token_url
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=101, clock=clock)
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret, refresh_margin_s=20)
    tokens = TokenManager(oauth, session, clock=clock)
    first = await tokens.get()
    clock.advance(70)
    assert (await tokens.get()).value == first.value
    assert stand_in.stats["token_requests"] == 1
    clock.advance(12)  # 18 s of 100 left: inside the 20 s margin
    assert (await tokens.get()).value == first.value
    await asyncio.sleep(0.2)
    assert stand_in.stats["token_requests"] == 2
    assert (await tokens.get()).value != first.value


async def test_token_short_lifetime_margin_capped(start_stand_in, session):
    """A 20 s token is not refreshed on every request: the margin is capped at a quarter."""
    from proxy.standin import token_url
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=21, clock=clock)
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret, refresh_margin_s=60)
    tokens = TokenManager(oauth, session, clock=clock)
    await tokens.get()
    for _ in range(14):
        clock.advance(1)
        await tokens.get()
    assert stand_in.stats["token_requests"] == 1


async def test_token_wall_clock_jump_never_sends_stale(start_stand_in, session):
    """After the clock jumps past expiry (sleep, suspend), a new token is fetched before use."""
    from proxy.standin import token_url
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=900, clock=clock)
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret)
    tokens = TokenManager(oauth, session, clock=clock)
    first = await tokens.get()
    clock.advance(3 * 3600)
    second = await tokens.get()
    assert second.value != first.value
    assert second.expires_at > clock()


async def test_token_reuse_mode_no_loop(start_stand_in, session):
    """A server that hands the active token back does not cause a loop of token requests."""
    from proxy.standin import token_url
    clock = FakeClock()
    stand_in = await start_stand_in(token_lifetime_s=10, reissue="reuse", clock=clock)
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret)
    tokens = TokenManager(oauth, session, clock=clock)
    for _ in range(60):
        clock.advance(0.5)
        token = await tokens.get()
        assert token.expires_at > clock()
    # 30 s of fake time with 10 s tokens: about one request per lifetime, plus one early ask
    assert stand_in.stats["token_requests"] <= 6


async def test_token_forced_refresh_reuse_mode_returns_quickly(start_stand_in, session):
    """An operator's refresh makes one attempt, even when the server hands the token back."""
    from proxy.standin import token_url
    stand_in = await start_stand_in(token_lifetime_s=300, reissue="reuse")
    oauth = oauth_settings(token_url(stand_in.base), client_id=stand_in.settings.client_id,
                           client_secret=stand_in.settings.client_secret)
    tokens = TokenManager(oauth, session)
    first = await tokens.get()
    for _ in range(3):
        token = await asyncio.wait_for(tokens.refresh(), 5)
        assert token.value == first.value
        assert token.reissued
    assert stand_in.stats["token_requests"] == 4
