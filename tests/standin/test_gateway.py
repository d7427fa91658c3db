"""The stand-in's Insights gateway: Choreo Connect's token checks, error bodies and router 404."""

from __future__ import annotations

import json
import re

import pytest

from proxy.standin.insights import InsightsService
from proxy.standin.jwt import SigningKey

from .conftest import (
    INSIGHTS_PATH,
    SAMPLE_QUERY,
    FakeClock,
    basic_auth,
    decode_jwt_part,
    query_insights,
    request_token,
    state_of,
)

CHALLENGE = 'Bearer realm="Choreo Connect", error="invalid_token", error_description="The provided token is invalid"'
CASE_A = (
    b'{"error_message":"Invalid Credentials","code":"900901",'
    b'"error_description":"Make sure you have provided the correct security credentials"}'
)
CASE_B = (
    b'{"error_message":"Invalid Credentials","code":"900901","error_description":"Not a JWT token. Failed to decode '
    b'the token header. Make sure you have provided the correct security credentials"}'
)
CASE_C = (
    b'{"error_message":"Invalid Credentials","code":"900901",'
    b'"error_description":"Invalid Credentials. Make sure you have provided the correct security credentials"}'
)
CASE_D = (
    b'{"error_message":"Invalid Credentials","code":"900901",'
    b'"error_description":"Invalid JWT token. Make sure you have provided the correct security credentials"}'
)
CASE_E = (
    b'{"error_message":"Resource forbidden ","code":"900908",'
    b'"error_description":"User is NOT authorized to access the Resource. API Subscription validation failed."}'
)
CASE_F = (
    b'{"error_message":"The access token does not allow you to access the requested resource","code":"900910",'
    b'"error_description":"User is NOT authorized to access the Resource: /query-api. Scope validation failed."}'
)
CASE_H = b'{"code":"404","message":"Not Found","description":"The requested resource is not available."}'


def _assert_enforcer_rejection(response, status: int, body: bytes, raw: bytes) -> None:
    assert response.status == status
    assert raw == body
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert response.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize("authorization", [None, basic_auth(), "Token abc", ""])
async def test_gateway_missing_bearer_returns_case_a(standin, authorization):
    """No Authorization header, or one with another scheme, gets 401 900901 "Make sure ..." (case A)."""
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await standin.post(INSIGHTS_PATH, json=SAMPLE_QUERY, headers=headers)

    _assert_enforcer_rejection(response, 401, CASE_A, await response.read())


@pytest.mark.parametrize("value", ["abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9", "Zm9v.YmFy.YmF6", ""])
async def test_gateway_non_jwt_bearer_returns_case_b(standin, value):
    """A bearer value that does not parse as a JWT gets the "Not a JWT token" body (case B)."""
    response = await query_insights(standin, value)

    _assert_enforcer_rejection(response, 401, CASE_B, await response.read())


async def test_gateway_bearer_scheme_is_case_insensitive(standin):
    """"bearer" in lower case is accepted like "Bearer"."""
    token = (await request_token(standin))["access_token"]

    response = await standin.post(INSIGHTS_PATH, json=SAMPLE_QUERY, headers={"Authorization": f"bearer {token}"})

    assert response.status == 200


async def test_gateway_expired_token_returns_case_c(standin, clock: FakeClock):
    """A token more than 5 s past its exp gets the invalid-credentials body (case C)."""
    token = (await request_token(standin))["access_token"]

    clock.advance(900 + 6)
    response = await query_insights(standin, token)

    _assert_enforcer_rejection(response, 401, CASE_C, await response.read())
    assert state_of(standin).stats.expired_tokens_presented == 1


async def test_gateway_skewed_expiry_accepted_and_counted(standin, clock: FakeClock):
    """A token at most 5 s past its exp still passes, and is counted as an expired token presented."""
    token = (await request_token(standin))["access_token"]

    clock.advance(899)
    fresh = await query_insights(standin, token)
    counted_before_expiry = state_of(standin).stats.expired_tokens_presented
    clock.advance(6)
    within_skew = await query_insights(standin, token)

    assert fresh.status == 200
    assert counted_before_expiry == 0
    assert within_skew.status == 200
    assert state_of(standin).stats.expired_tokens_presented == 1


async def test_gateway_tampered_payload_returns_case_c(standin):
    """A token whose payload was changed after signing fails the signature check (case C)."""
    token = (await request_token(standin))["access_token"]
    header_segment, _, signature_segment = token.split(".")
    claims = decode_jwt_part(token, 1)
    claims["exp"] += 3600
    forged_payload = SigningKey.generate().sign(claims).split(".")[1]

    response = await query_insights(standin, f"{header_segment}.{forged_payload}.{signature_segment}")

    _assert_enforcer_rejection(response, 401, CASE_C, await response.read())


async def test_gateway_token_from_other_key_returns_case_c(standin):
    """A well-formed token signed by another key (unknown kid) gets case C."""
    claims = decode_jwt_part((await request_token(standin))["access_token"], 1)

    response = await query_insights(standin, SigningKey.generate().sign(claims))

    _assert_enforcer_rejection(response, 401, CASE_C, await response.read())


async def test_gateway_unknown_issuer_returns_case_c(standin):
    """A token signed by the stand-in's key but naming another issuer gets case C."""
    claims = decode_jwt_part((await request_token(standin))["access_token"], 1)
    claims["iss"] = "https://sts.example.test/oauth2/token"

    response = await query_insights(standin, state_of(standin).signing_key.sign(claims))

    _assert_enforcer_rejection(response, 401, CASE_C, await response.read())


async def test_gateway_revoked_token_returns_case_d(standin):
    """A token revoked at the revoke endpoint gets the "Invalid JWT token" body (case D)."""
    token = (await request_token(standin))["access_token"]
    await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    response = await query_insights(standin, token)

    _assert_enforcer_rejection(response, 401, CASE_D, await response.read())
    assert state_of(standin).stats.revoked_tokens_presented == 1


async def test_gateway_unsubscribed_application_returns_case_e(make_standin):
    """With subscribed=False a valid token gets 403 900908 with "Resource forbidden " (case E)."""
    client = await make_standin(subscribed=False)
    token = (await request_token(client))["access_token"]

    response = await query_insights(client, token)

    _assert_enforcer_rejection(response, 403, CASE_E, await response.read())
    assert state_of(client).stats.insights_rejected == 1


async def test_gateway_missing_required_scope_returns_case_f(make_standin):
    """With a required scope, a token without it gets 403 900910 (case F) and one with it passes."""
    client = await make_standin(required_scope="apim:api_manage")
    unscoped = (await request_token(client))["access_token"]
    scoped = (await request_token(client, scope="apim:api_manage"))["access_token"]

    rejected = await query_insights(client, unscoped)
    accepted = await query_insights(client, scoped)

    _assert_enforcer_rejection(rejected, 403, CASE_F, await rejected.read())
    assert accepted.status == 200


async def test_gateway_error_content_type_configurable(make_standin):
    """gateway_content_type="application/json" labels the enforcer's errors as Choreo Connect's source does."""
    client = await make_standin(gateway_content_type="application/json")

    response = await query_insights(client, None)

    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == CASE_A


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", INSIGHTS_PATH),
        ("PUT", INSIGHTS_PATH),
        ("POST", INSIGHTS_PATH + "/"),
        ("POST", "/93tu/insights/1.0.0/other"),
        ("POST", "/query-api"),
        ("GET", "/"),
        ("GET", "/_standin/unknown"),
        ("GET", "/oauth2/authorize"),
    ],
)
async def test_gateway_unknown_route_returns_router_404(standin, method, path):
    """A wrong method or unknown path gets the router's 404 before any token check (case H)."""
    response = await standin.request(method, path)

    assert response.status == 404
    assert await response.read() == CASE_H
    assert response.headers["Content-Type"] == "application/json"
    assert "WWW-Authenticate" not in response.headers


async def test_gateway_org_prefix_is_configurable(make_standin):
    """org_prefix moves the Insights route, and the default path then gets the router 404."""
    client = await make_standin(org_prefix="abcd")
    token = (await request_token(client))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    moved = await client.post("/abcd/insights/1.0.0/query-api", json=SAMPLE_QUERY, headers=headers)
    default = await client.post(INSIGHTS_PATH, json=SAMPLE_QUERY, headers=headers)

    assert moved.status == 200
    assert default.status == 404


async def test_gateway_valid_token_reaches_insights_service(standin, clock: FakeClock):
    """A valid token passes to the GraphQL layer, whose status and body come back as compact JSON (case K)."""
    token = (await request_token(standin))["access_token"]

    response = await query_insights(standin, token)

    raw = await response.read()
    body = json.loads(raw)
    status, expected = await InsightsService(clock=clock).execute(SAMPLE_QUERY)

    assert response.status == status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert body == expected
    assert raw == json.dumps(expected, separators=(",", ":")).encode()
    assert [environment["name"] for environment in body["data"]["listEnvironments"]] == ["Development", "Production"]


async def test_gateway_records_requests_as_received(standin):
    """Each Insights request is recorded with its method, path, headers, body and response status."""
    token = (await request_token(standin))["access_token"]

    await query_insights(standin, token)
    await query_insights(standin, None)
    first, second = state_of(standin).recorded

    assert first.method == "POST"
    assert first.path == INSIGHTS_PATH
    assert first.headers["Authorization"] == f"Bearer {token}"
    assert first.json() == SAMPLE_QUERY
    assert first.status == 200
    assert "Authorization" not in second.headers
    assert second.status == 401


async def test_gateway_recorded_requests_are_bounded(standin):
    """The record keeps only the most recent requests."""
    recorded = state_of(standin).recorded

    for _ in range(recorded.maxlen + 3):
        await query_insights(standin, None)

    assert len(recorded) == recorded.maxlen


async def test_gateway_malformed_json_returns_graphql_400(standin):
    """A body that is not JSON gets 400 with a GraphQL errors list."""
    token = (await request_token(standin))["access_token"]

    response = await standin.post(INSIGHTS_PATH, data=b"{not json", headers={"Authorization": f"Bearer {token}"})
    body = await response.json()

    assert response.status == 400
    assert list(body) == ["errors"]
    assert body["errors"][0]["message"].startswith("The request body is not valid JSON")


async def test_gateway_non_object_json_returns_graphql_400(standin):
    """A JSON body that is not an object gets 400 naming the expected shape."""
    token = (await request_token(standin))["access_token"]

    response = await query_insights(standin, token, payload=["query"])
    body = await response.json()

    assert response.status == 400
    assert list(body) == ["errors"]
    assert body["errors"][0]["message"].startswith("The request body must be a JSON object")


async def test_gateway_adds_realism_headers(standin):
    """Insights responses carry the security headers and 18-digit trace key seen on Choreo."""
    response = await query_insights(standin, None)

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r"[1-9][0-9]{17}", response.headers["X-Trace-Key"])


async def test_gateway_counts_requests_and_rejections(standin):
    """insights_requests counts every Insights request and insights_rejected the 401 and 403 responses."""
    token = (await request_token(standin))["access_token"]

    await query_insights(standin, token)
    await query_insights(standin, None)
    await query_insights(standin, "garbage")
    stats = state_of(standin).stats

    assert stats.insights_requests == 3
    assert stats.insights_rejected == 2


async def test_gateway_error_bodies_parse_as_json(standin):
    """The enforcer's text/plain bodies are still JSON with "code" as a string."""
    response = await query_insights(standin, None)

    body = json.loads(await response.read())

    assert body["code"] == "900901"
