"""Fixtures for the stand-in's tests: a fake clock, stand-ins on loopback sockets, and token helpers."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proxy.standin import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    STANDIN_STATE,
    StandinSettings,
    StandinState,
    create_standin_app,
)
from proxy.standin.insights import FIXTURE_ORG

# 2026-01-01T00:00:00Z: a whole second, so iat and exp come out exact.
CLOCK_START = 1_767_225_600.0
INSIGHTS_PATH = "/93tu/insights/1.0.0/query-api"
# The documentation's sample query, for the stand-in's fixture organization.
SAMPLE_QUERY = {
    "query": "query ($org: OrgFilter!) {listEnvironments(org: $org){id name}}",
    "variables": {"org": {"orgId": FIXTURE_ORG.uuid}},
}


class FakeClock:
    """A wall clock that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = CLOCK_START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StandinFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_standin(aiohttp_client: Any, clock: FakeClock) -> StandinFactory:
    """Return a factory that serves a stand-in with the given settings on a loopback port."""

    async def factory(**overrides: Any) -> TestClient:
        settings = StandinSettings(clock=clock, **overrides)
        return await aiohttp_client(create_standin_app(settings))

    return factory


@pytest.fixture
async def standin(make_standin: StandinFactory) -> TestClient:
    return await make_standin()


def state_of(client: TestClient) -> StandinState:
    return client.app[STANDIN_STATE]


def basic_auth(client_id: str = DEMO_CLIENT_ID, client_secret: str = DEMO_CLIENT_SECRET) -> str:
    credentials = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


async def request_token(client: TestClient, **form: str) -> dict[str, Any]:
    """Obtain a token with the demo credentials by HTTP Basic and return the parsed 200 body."""
    form.setdefault("grant_type", "client_credentials")
    response = await client.post("/oauth2/token", data=form, headers={"Authorization": basic_auth()})
    assert response.status == 200, await response.text()
    return await response.json()


async def query_insights(client: TestClient, token: str | None, payload: Any = None) -> Any:
    """POST a query to the Insights route with ``Authorization: Bearer <token>`` (no header when None)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = json.dumps(SAMPLE_QUERY if payload is None else payload)
    return await client.post(INSIGHTS_PATH, data=body, headers={**headers, "Content-Type": "application/json"})


def decode_jwt_part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
