"""A local stand-in for Choreo: its STS (token, revoke, JWKS), the Insights API gateway, and control routes.

Tests run it under pytest-aiohttp with :func:`create_standin_app`; ``insights-proxy simulate`` and
``insights-proxy demo`` serve it with :func:`start_standin`. ``app[STANDIN_STATE]`` exposes its live
state: issued tokens, faults, counters and the recorded Insights requests.
"""

from proxy.standin.app import (
    create_standin_app,
    faults_url,
    insights_url,
    jwks_url,
    revoke_url,
    start_standin,
    stats_url,
    token_url,
)
from proxy.standin.faults import Faults
from proxy.standin.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, REISSUE_MODES, StandinSettings
from proxy.standin.state import STANDIN_STATE, RecordedRequest, StandinState, Stats
from proxy.standin.tokens import IssuedToken

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "REISSUE_MODES",
    "STANDIN_STATE",
    "Faults",
    "IssuedToken",
    "RecordedRequest",
    "StandinSettings",
    "StandinState",
    "Stats",
    "create_standin_app",
    "faults_url",
    "insights_url",
    "jwks_url",
    "revoke_url",
    "start_standin",
    "stats_url",
    "token_url",
]
