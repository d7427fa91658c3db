"""The live state of one stand-in app, shared by its routes and reachable by tests as ``app[STANDIN_STATE]``."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.standin.jwt import SigningKey
from proxy.standin.settings import StandinSettings
from proxy.standin.tokens import TokenStore

if TYPE_CHECKING:
    from proxy.standin.faults import Faults

# Enough recent Insights requests for a test to inspect a burst, small enough to keep a soak run flat.
RECORDED_REQUESTS_MAX = 256


@dataclass
class Stats:
    """Counters served by ``GET /_standin/stats`` and zeroed by ``POST /_standin/stats/reset``."""

    token_requests: int = 0
    # Token requests whose response status is not 200, including connections reset by the "down" fault.
    token_errors: int = 0
    tokens_issued: int = 0
    # Token requests that returned the client's active token again (re-issue mode "reuse").
    tokens_reused: int = 0
    revoke_requests: int = 0
    # Tokens revoked through the revoke endpoint.
    revocations: int = 0
    # Tokens revoked because their client obtained a new one (re-issue mode "revoke_previous").
    reissue_revocations: int = 0
    insights_requests: int = 0
    # Insights requests rejected with 401 or 403, injected 401s included.
    insights_rejected: int = 0
    # Insights requests whose response came from the insights_fail_next fault.
    insights_faults_injected: int = 0
    # Genuine tokens presented at or after their exp, including within the 5 s skew the gateway tolerates.
    expired_tokens_presented: int = 0
    # Genuine tokens presented after their revocation reached the gateway.
    revoked_tokens_presented: int = 0

    def reset(self) -> None:
        for counter in dataclasses.fields(self):
            setattr(self, counter.name, 0)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class RecordedRequest:
    """One request that reached the Insights route, as the gateway received it."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes
    received_at: float
    # The response status, or None while the request is being handled.
    status: int | None = None

    def json(self) -> Any:
        """Parse the body as JSON, raising ``ValueError`` when it is not JSON."""
        return json.loads(self.body)


@dataclass
class StandinState:
    """Everything one stand-in app changes while it runs: tokens, faults, counters and recorded requests."""

    settings: StandinSettings
    faults: Faults
    signing_key: SigningKey
    tokens: TokenStore
    stats: Stats = field(default_factory=Stats)
    recorded: collections.deque[RecordedRequest] = field(
        default_factory=lambda: collections.deque(maxlen=RECORDED_REQUESTS_MAX)
    )
    # Set when the app shuts down, so that injected sleeps end instead of holding up the shutdown.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # The Insights GraphQL service, created on first use (see proxy.standin.gateway).
    insights_service: Any = None

    def now(self) -> float:
        return self.settings.clock()

    def stats_snapshot(self) -> dict[str, int]:
        snapshot = self.stats.as_dict()
        snapshot["active_tokens"] = self.tokens.count_active()
        return snapshot


STANDIN_STATE = web.AppKey("standin_state", StandinState)
