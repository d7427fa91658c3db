"""The stand-in's token, revoke and JWKS endpoints, pinned to WSO2 Identity Server's wire format."""

from __future__ import annotations

import base64
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.standin import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

from .conftest import (
    FakeClock,
    basic_auth,
    decode_jwt_part,
    query_insights,
    request_token,
    state_of,
)

REALM = "Basic realm=127.0.0.1"


def _b64url_int(segment: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)), "big")


async def test_token_basic_auth_returns_wso2_response(standin):
    """A client-credentials request with HTTP Basic gets WSO2's body, key order and no-cache headers."""
    response = await standin.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic_auth()}
    )
    raw = await response.read()
    body = await response.json()

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert list(body) == ["access_token", "scope", "token_type", "expires_in"]
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "default"
    assert body["expires_in"] == 900
    assert type(body["expires_in"]) is int
    assert raw == (
        b'{"access_token":"' + body["access_token"].encode() + b'","scope":"default","token_type":"Bearer","expires_in":900}'
    )


async def test_token_form_credentials_accepted(standin):
    """client_id and client_secret as form fields authenticate the client like HTTP Basic does."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
    )

    assert response.status == 200
    assert (await response.json())["token_type"] == "Bearer"


async def test_token_matching_form_client_id_accepted(standin):
    """A form client_id equal to the Basic header's id is not a second set of credentials."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID},
        headers={"Authorization": basic_auth()},
    )

    assert response.status == 200


async def test_token_percent_encoded_basic_credentials_accepted(make_standin):
    """Credentials form-encoded before Basic encoding (RFC 6749 section 2.3.1) match the raw secret."""
    client = await make_standin(client_secret="s3cr+t/x y")

    encoded = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(DEMO_CLIENT_ID, "s3cr%2Bt%2Fx+y")},
    )
    raw = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(DEMO_CLIENT_ID, "s3cr+t/x y")},
    )

    assert encoded.status == 200
    assert raw.status == 200


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("apim:api_manage", "apim:api_manage"),
        ("unknown:scope apim:api_manage", "apim:api_manage"),
        ("unknown:scope", "default"),
        ("", "default"),
    ],
)
async def test_token_scope_echoes_allowed_scopes_or_default(standin, requested, granted):
    """Allowed requested scopes are echoed, unknown ones dropped, and "default" granted when none is left."""
    body = await request_token(standin, scope=requested)

    assert body["scope"] == granted
    assert decode_jwt_part(body["access_token"], 1)["scope"] == granted


async def test_token_default_scope_is_configurable(make_standin):
    """The fallback scope comes from the settings, e.g. API Manager's "am_application_scope default"."""
    client = await make_standin(default_scope="am_application_scope default")

    body = await request_token(client)

    assert body["scope"] == "am_application_scope default"


async def test_token_is_rs256_jwt_with_wso2_claims(standin, clock: FakeClock):
    """The access token is an RS256 JWT with WSO2's header and claims, timed by the injected clock."""
    body = await request_token(standin, scope="apim:api_manage")
    token = body["access_token"]
    kid = state_of(standin).signing_key.kid

    header = decode_jwt_part(token, 0)
    claims = decode_jwt_part(token, 1)

    assert header == {"typ": "at+jwt", "alg": "RS256", "kid": kid}
    assert list(header) == ["typ", "alg", "kid"]
    assert list(claims) == ["iss", "sub", "aud", "azp", "client_id", "scope", "aut", "iat", "nbf", "exp", "jti"]
    assert claims["iss"] == f"http://127.0.0.1:{standin.port}/oauth2/token"
    assert claims["sub"] == DEMO_CLIENT_ID
    assert claims["aud"] == DEMO_CLIENT_ID
    assert claims["azp"] == DEMO_CLIENT_ID
    assert claims["client_id"] == DEMO_CLIENT_ID
    assert claims["scope"] == "apim:api_manage"
    assert claims["aut"] == "APPLICATION"
    assert claims["iat"] == int(clock.now)
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 900
    assert uuid.UUID(claims["jti"])


async def test_jwks_publishes_key_that_verifies_tokens(standin):
    """GET /oauth2/jwks publishes one RSA key whose kid and modulus verify the issued tokens."""
    token = (await request_token(standin))["access_token"]

    response = await standin.get("/oauth2/jwks")
    jwks = await response.json()

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert jwk["kty"] == "RSA"
    assert jwk["alg"] == "RS256"
    assert jwk["use"] == "sig"
    assert jwk["kid"] == decode_jwt_part(token, 0)["kid"]

    public_key = rsa.RSAPublicNumbers(_b64url_int(jwk["e"]), _b64url_int(jwk["n"])).public_key()
    header_segment, payload_segment, signature_segment = token.split(".")
    signature = base64.urlsafe_b64decode(signature_segment + "=" * (-len(signature_segment) % 4))
    public_key.verify(
        signature, f"{header_segment}.{payload_segment}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


async def test_token_unknown_client_returns_invalid_client(standin):
    """An unknown client id gets 401 invalid_client naming the id, with the Basic realm challenge."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth("nobodyKnowsThisKey0000000000a", "x")},
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == (
        b'{"error_description":"A valid OAuth client could not be found for client_id: nobodyKnowsThisKey0000000000a",'
        b'"error":"invalid_client"}'
    )


async def test_token_wrong_secret_returns_invalid_client(standin):
    """A known client id with a wrong secret gets 401 "Client credentials are invalid."."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(DEMO_CLIENT_ID, "wrong")},
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert await response.read() == b'{"error_description":"Client credentials are invalid.","error":"invalid_client"}'


async def test_token_form_id_without_secret_returns_invalid_client(standin):
    """A form client_id without a secret cannot authenticate a confidential client."""
    response = await standin.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID})

    assert response.status == 401
    assert await response.read() == b'{"error_description":"Client credentials are invalid.","error":"invalid_client"}'


@pytest.mark.parametrize("authorization", ["Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode()])
async def test_token_malformed_basic_header_fails_authentication(standin, authorization):
    """A Basic header that does not decode to id:secret gets 401 "Client Authentication failed."."""
    response = await standin.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"Authorization": authorization}
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert await response.read() == b'{"error_description":"Client Authentication failed.","error":"invalid_client"}'


async def test_token_duplicate_credentials_fail_authentication(standin):
    """A client secret in both the Basic header and the form is rejected as ambiguous."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET},
        headers={"Authorization": basic_auth()},
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == REALM
    assert await response.read() == b'{"error_description":"Client Authentication failed.","error":"invalid_client"}'


async def test_token_realm_is_host_of_host_header(standin):
    """The Basic realm is the Host header's host without its port."""
    response = await standin.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(DEMO_CLIENT_ID, "wrong"), "Host": "sts.example.test:8443"},
    )

    assert response.headers["WWW-Authenticate"] == "Basic realm=sts.example.test"


async def test_token_missing_grant_type_returns_invalid_request(standin):
    """A request without grant_type gets 400 "Missing grant_type parameter value" and no challenge."""
    response = await standin.post("/oauth2/token", data={"scope": "default"}, headers={"Authorization": basic_auth()})

    assert response.status == 400
    assert "WWW-Authenticate" not in response.headers
    assert await response.read() == b'{"error_description":"Missing grant_type parameter value","error":"invalid_request"}'


async def test_token_unknown_grant_type_returns_invalid_request(standin):
    """An unknown grant_type gets invalid_request, not unsupported_grant_type, as in WSO2."""
    response = await standin.post("/oauth2/token", data={"grant_type": "magic"}, headers={"Authorization": basic_auth()})

    assert response.status == 400
    assert await response.read() == b'{"error_description":"Unsupported grant_type value","error":"invalid_request"}'


async def test_token_disabled_grant_type_returns_unauthorized_client(standin):
    """A known grant the application has not enabled gets 400 unauthorized_client."""
    response = await standin.post(
        "/oauth2/token", data={"grant_type": "refresh_token"}, headers={"Authorization": basic_auth()}
    )

    assert response.status == 400
    assert await response.read() == (
        b'{"error_description":"The authenticated client is not authorized to use this authorization grant type",'
        b'"error":"unauthorized_client"}'
    )


async def test_token_without_credentials_returns_missing_client_id(standin):
    """A request with no client credentials at all gets 400 "Missing parameters: client_id"."""
    response = await standin.post("/oauth2/token", data={"grant_type": "client_credentials"})

    assert response.status == 400
    assert await response.read() == b'{"error_description":"Missing parameters: client_id","error":"invalid_request"}'


async def test_token_repeated_parameter_returns_invalid_request(standin):
    """A form field given twice is rejected."""
    response = await standin.post(
        "/oauth2/token",
        data=[("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")],
        headers={"Authorization": basic_auth()},
    )

    assert response.status == 400
    assert await response.read() == (
        b'{"error_description":"Invalid request with repeated parameters.","error":"invalid_request"}'
    )


async def test_token_json_body_returns_415(standin):
    """A token request that is not form-encoded gets 415."""
    response = await standin.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, headers={"Authorization": basic_auth()}
    )

    assert response.status == 415
    assert (await response.json())["error"] == "invalid_request"


async def test_token_org_handle_accepted_when_not_configured(standin):
    """Without a configured org handle, any orgHandle form field is accepted and ignored."""
    body = await request_token(standin, orgHandle="whatever")

    assert body["token_type"] == "Bearer"


async def test_token_matching_org_handle_accepted(make_standin):
    """An orgHandle equal to the configured one is accepted."""
    client = await make_standin(org_handle="acme")

    body = await request_token(client, orgHandle="acme")

    assert body["token_type"] == "Bearer"


async def test_token_wrong_org_handle_returns_unknown_client(make_standin):
    """An orgHandle naming another organization makes the client unknown, as a per-tenant lookup would."""
    client = await make_standin(org_handle="acme")

    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "orgHandle": "other"},
        headers={"Authorization": basic_auth()},
    )

    assert response.status == 401
    assert await response.read() == (
        b'{"error_description":"A valid OAuth client could not be found for client_id: '
        + DEMO_CLIENT_ID.encode()
        + b'","error":"invalid_client"}'
    )


async def test_token_lifetime_setting_sets_expires_in(make_standin, clock: FakeClock):
    """token_lifetime_s sets both expires_in and the JWT's exp."""
    client = await make_standin(token_lifetime_s=5)

    body = await request_token(client)

    assert body["expires_in"] == 5
    assert decode_jwt_part(body["access_token"], 1)["exp"] == int(clock.now) + 5


async def test_reissue_revoke_previous_revokes_old_token(make_standin):
    """In revoke_previous mode a new token makes the gateway reject the client's previous one."""
    client = await make_standin(reissue="revoke_previous")
    first = (await request_token(client))["access_token"]

    second = (await request_token(client))["access_token"]
    old = await query_insights(client, first)
    new = await query_insights(client, second)

    assert second != first
    assert old.status == 401
    assert (await old.json(content_type=None))["error_description"].startswith("Invalid JWT token.")
    assert new.status == 200
    assert state_of(client).stats.reissue_revocations == 1


async def test_reissue_revoke_previous_keeps_token_of_other_scope(make_standin):
    """revoke_previous revokes only the previous token with the same scope."""
    client = await make_standin(reissue="revoke_previous")
    scoped = (await request_token(client, scope="apim:api_manage"))["access_token"]

    await request_token(client)
    response = await query_insights(client, scoped)

    assert response.status == 200


async def test_reissue_revoke_previous_waits_for_revocation_delay(make_standin, clock: FakeClock):
    """The previous token stays usable until the revocation delay has passed on the clock."""
    client = await make_standin(reissue="revoke_previous", revocation_delay_s=3)
    first = (await request_token(client))["access_token"]
    await request_token(client)

    before = await query_insights(client, first)
    clock.advance(3)
    after = await query_insights(client, first)

    assert before.status == 200
    assert after.status == 401


async def test_reissue_keep_previous_leaves_old_token_valid(make_standin):
    """In keep_previous mode both the old and the new token pass the gateway."""
    client = await make_standin(reissue="keep_previous")
    first = (await request_token(client))["access_token"]

    second = (await request_token(client))["access_token"]
    old = await query_insights(client, first)
    new = await query_insights(client, second)

    assert second != first
    assert old.status == 200
    assert new.status == 200
    assert state_of(client).stats_snapshot()["active_tokens"] == 2


async def test_reissue_reuse_returns_remaining_lifetime(make_standin, clock: FakeClock):
    """In reuse mode the active token comes back with the whole seconds it has left."""
    client = await make_standin(reissue="reuse")
    first = await request_token(client)

    clock.advance(177)
    second = await request_token(client)

    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 723
    assert state_of(client).stats.tokens_reused == 1
    assert state_of(client).stats.tokens_issued == 1


async def test_reissue_reuse_issues_new_token_after_expiry(make_standin, clock: FakeClock):
    """In reuse mode an expired token is replaced by a new one with the full lifetime."""
    client = await make_standin(reissue="reuse")
    first = await request_token(client)

    clock.advance(900)
    second = await request_token(client)

    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 900


async def test_reissue_reuse_issues_new_token_after_revocation(make_standin):
    """In reuse mode a revoked token is replaced by a new one."""
    client = await make_standin(reissue="reuse")
    first = (await request_token(client))["access_token"]
    await client.post("/oauth2/revoke", data={"token": first}, headers={"Authorization": basic_auth()})

    second = await request_token(client)

    assert second["access_token"] != first
    assert second["expires_in"] == 900


async def test_revoke_active_token_returns_wso2_headers(standin):
    """Revoking an active token returns 200 with an empty body and the RevokedAccessToken header."""
    token = (await request_token(standin))["access_token"]

    response = await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    assert response.status == 200
    assert await response.read() == b""
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == "0"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["RevokedAccessToken"] == token
    assert response.headers["AuthorizedUser"] == DEMO_CLIENT_ID
    assert state_of(standin).stats.revocations == 1


async def test_revoke_form_credentials_wrong_hint_revokes(standin):
    """Form credentials authenticate, and a wrong token_type_hint does not stop the revocation."""
    token = (await request_token(standin))["access_token"]

    response = await standin.post(
        "/oauth2/revoke",
        data={
            "token": token,
            "token_type_hint": "refresh_token",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
        },
    )

    assert response.status == 200
    assert response.headers["RevokedAccessToken"] == token


@pytest.mark.parametrize("kind", ["unknown", "malformed", "expired", "already revoked"])
async def test_revoke_inactive_token_returns_200_without_headers(standin, clock: FakeClock, kind):
    """Unknown, malformed, expired and already revoked tokens get the same 200, minus the revocation headers."""
    token = (await request_token(standin))["access_token"]
    if kind == "unknown":
        token = token[:-4] + "AAAA"
    elif kind == "malformed":
        token = "not-a-token"
    elif kind == "expired":
        clock.advance(900)
    else:
        await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    response = await standin.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    assert response.status == 200
    assert await response.read() == b""
    assert response.headers["Cache-Control"] == "no-store"
    assert "RevokedAccessToken" not in response.headers
    assert "AuthorizedUser" not in response.headers


@pytest.mark.parametrize("form", [{}, {"token": ""}])
async def test_revoke_missing_token_returns_invalid_request(standin, form):
    """A revoke request without a token gets 400 "Invalid revocation request"."""
    response = await standin.post("/oauth2/revoke", data=form, headers={"Authorization": basic_auth()})

    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == b'{"error_description":"Invalid revocation request","error":"invalid_request"}'


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": basic_auth(DEMO_CLIENT_ID, "wrong")}, {"Authorization": basic_auth("unknown", "x")}, {}],
)
async def test_revoke_bad_credentials_returns_invalid_client(standin, headers):
    """Bad or missing client credentials get 401 with a JSON body labelled text/html, as WSO2 sends it."""
    response = await standin.post("/oauth2/revoke", data={"token": "x"}, headers=headers)

    assert response.status == 401
    assert response.headers["Content-Type"] == "text/html"
    assert response.headers["WWW-Authenticate"] == REALM
    assert await response.read() == b'{"error_description":"Client Authentication failed.","error":"invalid_client"}'


async def test_revoke_malformed_basic_header_names_invalid_header(standin):
    """A malformed Basic header gets the longer "Invalid Authorization Header." description."""
    response = await standin.post("/oauth2/revoke", data={"token": "x"}, headers={"Authorization": "Basic %%%"})

    assert response.status == 401
    assert response.headers["Content-Type"] == "text/html"
    assert await response.read() == (
        b'{"error_description":"Client Authentication failed. Invalid Authorization Header.","error":"invalid_client"}'
    )


async def test_revoke_duplicate_credentials_fail_authentication(standin):
    """A secret in both the Basic header and the form gets 401 invalid_client at the revoke endpoint too."""
    response = await standin.post(
        "/oauth2/revoke",
        data={"token": "x", "client_secret": DEMO_CLIENT_SECRET},
        headers={"Authorization": basic_auth()},
    )

    assert response.status == 401
    assert await response.read() == b'{"error_description":"Client Authentication failed.","error":"invalid_client"}'


async def test_revoke_repeated_parameter_returns_invalid_request(standin):
    """A revoke request with a form field given twice is rejected before anything is revoked."""
    token = (await request_token(standin))["access_token"]

    response = await standin.post(
        "/oauth2/revoke", data=[("token", token), ("token", token)], headers={"Authorization": basic_auth()}
    )

    assert response.status == 400
    assert await response.read() == (
        b'{"error_description":"Invalid request with repeated parameters.","error":"invalid_request"}'
    )
    assert state_of(standin).stats.revocations == 0


async def test_revoke_token_of_other_client_returns_unauthorized_client(standin):
    """A token issued to another client is not revoked and gets 401 unauthorized_client."""
    state = state_of(standin)
    grant = state.tokens.grant(
        client_id="otherClientKey00000000000000a",
        scope="default",
        issuer="http://127.0.0.1/oauth2/token",
        lifetime_s=900,
        reissue="keep_previous",
        revocation_delay_s=0,
    )

    response = await standin.post(
        "/oauth2/revoke", data={"token": grant.token.value}, headers={"Authorization": basic_auth()}
    )

    assert response.status == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"] == REALM
    assert await response.read() == b'{"error_description":"Client Authentication failed.","error":"unauthorized_client"}'
    assert not grant.token.is_revoked()


async def test_revoke_reaches_gateway_after_delay(make_standin, clock: FakeClock):
    """A revoked token passes the gateway until revocation_delay_s has passed, then gets case D."""
    client = await make_standin(revocation_delay_s=2.5)
    token = (await request_token(client))["access_token"]
    await client.post("/oauth2/revoke", data={"token": token}, headers={"Authorization": basic_auth()})

    clock.advance(2)
    during_delay = await query_insights(client, token)
    clock.advance(0.5)
    after_delay = await query_insights(client, token)

    assert during_delay.status == 200
    assert after_delay.status == 401
    assert (await after_delay.json(content_type=None))["error_description"].startswith("Invalid JWT token.")


async def test_sts_wrong_method_returns_405(standin):
    """A GET on the token endpoint is the STS's own 405, not the gateway router's 404."""
    response = await standin.get("/oauth2/token")

    assert response.status == 405
    assert "POST" in response.headers["Allow"]


def test_settings_reject_invalid_values():
    """StandinSettings names the invalid field and the fix."""
    from proxy.standin import StandinSettings

    with pytest.raises(ValueError, match=r"reissue 'sometimes' is invalid: use one of revoke_previous"):
        StandinSettings(reissue="sometimes")
    with pytest.raises(ValueError, match=r"token_lifetime_s 0 is invalid"):
        StandinSettings(token_lifetime_s=0)
    with pytest.raises(ValueError, match=r"client_id 'a:b' is invalid"):
        StandinSettings(client_id="a:b")
    with pytest.raises(ValueError, match=r"org_prefix 'a/b' is invalid"):
        StandinSettings(org_prefix="a/b")


def test_settings_repr_hides_secret():
    """The settings' repr never shows the client secret."""
    from proxy.standin import StandinSettings

    assert "topsecret" not in repr(StandinSettings(client_secret="topsecret"))

