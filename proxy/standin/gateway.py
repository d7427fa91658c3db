"""The stand-in's API gateway in front of the Insights API: ``POST /<org_prefix>/insights/1.0.0/query-api``.

It copies Choreo Connect, the gateway Choreo runs: an Envoy router that rejects unknown routes
itself, and an enforcer that checks the bearer token before the request reaches the backend.
Enforcer errors are compact JSON with the keys ``error_message``, ``code`` (a string) and
``error_description`` in that order; router errors use ``code``, ``message`` and ``description``.

Checks in order, each rejecting with the body of its case:

- A: no ``Authorization`` header, or a scheme other than ``Bearer`` (401, 900901).
- B: the bearer value does not parse as a JWT (401, 900901, "Not a JWT token...").
- C: bad algorithm, key id, signature or issuer, or expired more than 5 s ago (401, 900901).
- D: the token's revocation has reached the gateway (401, 900901, "Invalid JWT token...").
- E: the application is not subscribed (403, 900908).
- F: the token lacks the required scope, when one is configured (403, 900910).

A pending ``insights_fail_next`` fault takes precedence over these checks.
"""

from __future__ import annotations

import json
import secrets
from email.utils import formatdate
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.standin.faults import pause
from proxy.standin.jwt import InvalidTokenError, MalformedTokenError, compact_json
from proxy.standin.state import STANDIN_STATE, RecordedRequest, StandinState

# Choreo Connect's enforcer tolerates this much clock skew when it checks exp and nbf.
CLOCK_SKEW_S = 5
INSIGHTS_RESOURCE = "/query-api"
# Sent with every 401 and 403 of the enforcer. The realm string is literal.
BEARER_CHALLENGE = (
    'Bearer realm="Choreo Connect", error="invalid_token", error_description="The provided token is invalid"'
)
# Headers seen on a live Choreo gateway response (January 2026).
REALISM_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains; preload",
    "X-Content-Type-Options": "nosniff",
}


def enforcer_body(message: str, code: str, description: str) -> bytes:
    return compact_json({"error_message": message, "code": code, "error_description": description})


def router_body(code: str, message: str, description: str) -> bytes:
    return compact_json({"code": code, "message": message, "description": description})


MISSING_CREDENTIALS_BODY = enforcer_body(
    "Invalid Credentials", "900901", "Make sure you have provided the correct security credentials"
)
NOT_A_JWT_BODY = enforcer_body(
    "Invalid Credentials",
    "900901",
    "Not a JWT token. Failed to decode the token header. Make sure you have provided the correct security credentials",
)
INVALID_CREDENTIALS_BODY = enforcer_body(
    "Invalid Credentials", "900901", "Invalid Credentials. Make sure you have provided the correct security credentials"
)
REVOKED_TOKEN_BODY = enforcer_body(
    "Invalid Credentials", "900901", "Invalid JWT token. Make sure you have provided the correct security credentials"
)
NOT_SUBSCRIBED_BODY = enforcer_body(
    "Resource forbidden ",  # the trailing space is in Choreo Connect's message
    "900908",
    "User is NOT authorized to access the Resource. API Subscription validation failed.",
)
SCOPE_MISSING_BODY = enforcer_body(
    "The access token does not allow you to access the requested resource",
    "900910",
    f"User is NOT authorized to access the Resource: {INSIGHTS_RESOURCE}. Scope validation failed.",
)
THROTTLED_BODY = enforcer_body("Message throttled out", "900803", "You have exceeded your quota")
ROUTE_NOT_FOUND_BODY = router_body("404", "Not Found", "The requested resource is not available.")

# Envoy's own texts for the reasons the router reports.
_UPSTREAM_FAILURE_BODIES = {
    # NOTE: the real router reports an upstream reset with 503. The stand-in sends this body with 502
    # so that tests can tell the two injected statuses apart.
    502: router_body(
        "102509",
        "Upstream connection reset by the remote",
        "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
    ),
    503: router_body(
        "102503",
        "Upstream connection failed",
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
    ),
    504: router_body("102504", "Upstream connection timeout", "upstream request timeout"),
}
# An injected 500 stands for the Insights backend failing, so its body is a GraphQL error, not a gateway one.
BACKEND_FAILURE_BODY = compact_json({"errors": [{"message": "Internal server error"}]})


def route_not_found() -> web.Response:
    """Build the router's 404 for a path or method that no route matches (sent before any token check)."""
    return web.Response(status=404, body=ROUTE_NOT_FOUND_BODY, content_type="application/json")


def insights_path(org_prefix: str) -> str:
    return f"/{org_prefix}/insights/1.0.0/query-api"


def _enforcer_error(state: StandinState, status: int, body: bytes) -> web.Response:
    headers = {"WWW-Authenticate": BEARER_CHALLENGE} if status in (401, 403) else {}
    return web.Response(status=status, body=body, content_type=state.settings.gateway_content_type, headers=headers)


def authenticate(state: StandinState, authorization: str | None) -> web.Response | None:
    """Check the bearer token as the enforcer does and return the rejection, or None for a valid token."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return _enforcer_error(state, 401, MISSING_CREDENTIALS_BODY)

    claims = _verify_token(state, value.strip())
    if isinstance(claims, web.Response):
        return claims

    faults = state.faults
    if not faults.subscribed:
        return _enforcer_error(state, 403, NOT_SUBSCRIBED_BODY)
    scopes = str(claims.get("scope", "")).split()
    if faults.required_scope is not None and faults.required_scope not in scopes:
        return _enforcer_error(state, 403, SCOPE_MISSING_BODY)
    return None


def _verify_token(state: StandinState, value: str) -> dict[str, Any] | web.Response:
    """Return the claims of a genuine, unrevoked, unexpired token, or its 401 rejection.

    It also counts genuine tokens presented after their expiry or after their revocation took effect.
    """
    try:
        claims = state.signing_key.verify(value)
    except MalformedTokenError:
        return _enforcer_error(state, 401, NOT_A_JWT_BODY)
    except InvalidTokenError:
        return _enforcer_error(state, 401, INVALID_CREDENTIALS_BODY)
    if claims.get("iss") not in state.tokens.issuers:
        return _enforcer_error(state, 401, INVALID_CREDENTIALS_BODY)

    now = state.now()
    token = state.tokens.find_by_jti(claims.get("jti"))
    if token is not None and token.is_rejected_as_revoked(now):
        state.stats.revoked_tokens_presented += 1
        return _enforcer_error(state, 401, REVOKED_TOKEN_BODY)

    expires_at = claims.get("exp")
    not_before = claims.get("nbf", 0)
    if not isinstance(expires_at, int | float) or not isinstance(not_before, int | float):
        return _enforcer_error(state, 401, INVALID_CREDENTIALS_BODY)
    if now >= expires_at:
        state.stats.expired_tokens_presented += 1
    if now > expires_at + CLOCK_SKEW_S or now < not_before - CLOCK_SKEW_S:
        return _enforcer_error(state, 401, INVALID_CREDENTIALS_BODY)
    return claims


def injected_failure(state: StandinState, status: int) -> web.Response:
    """Build the response of an ``insights_fail_next`` fault with this status."""
    if status == 401:
        return _enforcer_error(state, 401, INVALID_CREDENTIALS_BODY)
    if status == 429:
        # Retry-After as an IMF-fixdate of the throttling window's end, as Choreo Connect sends it.
        retry_at = state.now() + state.faults.insights_retry_after_s
        response = _enforcer_error(state, 429, THROTTLED_BODY)
        response.headers["Retry-After"] = formatdate(retry_at, usegmt=True)
        return response
    if status == 500:
        return web.Response(status=500, body=BACKEND_FAILURE_BODY, content_type="application/json")
    return web.Response(status=status, body=_UPSTREAM_FAILURE_BODIES[status], content_type="application/json")


def _graphql_request_error(message: str) -> web.Response:
    body = compact_json({"errors": [{"message": message}]})
    return web.Response(status=400, body=body, content_type="application/json")


def _insights_service(state: StandinState) -> Any:
    """Return the Insights GraphQL service, creating it on first use.

    The import is deferred so that the STS and the control routes work without the GraphQL layer loaded.
    """
    if state.insights_service is None:
        from proxy.standin.insights import InsightsService

        state.insights_service = InsightsService(clock=state.settings.clock)
    return state.insights_service


async def _execute(state: StandinState, body: bytes) -> web.Response:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return _graphql_request_error(f"The request body is not valid JSON: {exc}.")
    except RecursionError:
        return _graphql_request_error("The request body is nested too deeply to parse.")

    # The GraphQL layer rejects JSON that is not a GraphQL request with 400 itself.
    status, result = await _insights_service(state).execute(payload)
    return web.Response(status=status, body=compact_json(result), content_type="application/json")


async def _respond(request: web.Request, state: StandinState, body: bytes) -> web.Response:
    # The token is checked on arrival, before the injected latency and fault, as a gateway does,
    # so that the presented-token counters stay exact.
    rejection = authenticate(state, request.headers.get("Authorization"))
    await pause(state, state.faults.insights_latency_ms / 1000)
    injected_status = state.faults.take_insights_failure()
    if injected_status is not None:
        state.stats.insights_faults_injected += 1
        return injected_failure(state, injected_status)
    if rejection is not None:
        return rejection
    return await _execute(state, body)


async def query_insights(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    body = await request.read()
    record = RecordedRequest(
        method=request.method,
        path=request.path,
        query_string=request.query_string,
        headers=CIMultiDict(request.headers),
        body=body,
        received_at=state.now(),
    )
    state.recorded.append(record)
    state.stats.insights_requests += 1

    response = await _respond(request, state, body)

    record.status = response.status
    if response.status in (401, 403):
        state.stats.insights_rejected += 1
    response.headers.update(REALISM_HEADERS)
    response.headers["X-Trace-Key"] = str(10**17 + secrets.randbelow(9 * 10**17))
    return response


def add_gateway_routes(app: web.Application, org_prefix: str) -> None:
    # POST only: any other method on this path falls through to the router's 404, as in Choreo Connect.
    app.router.add_post(insights_path(org_prefix), query_insights)
