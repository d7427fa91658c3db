"""The stand-in's STS: ``POST /oauth2/token``, ``POST /oauth2/revoke`` and ``GET /oauth2/jwks``.

Bodies, status codes and headers copy WSO2 Identity Server, which runs Choreo's STS (sts.choreo.dev).
Error bodies are compact JSON with the keys in WSO2's order, ``error_description`` then ``error``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import struct
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import web
from multidict import MultiDictProxy

from proxy.standin.faults import pause
from proxy.standin.jwt import compact_json
from proxy.standin.state import STANDIN_STATE, StandinState

logger = logging.getLogger(__name__)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
CLIENT_CREDENTIALS = "client_credentials"
# Grant types WSO2 Identity Server supports. The fake application enables client_credentials only, so the
# others get unauthorized_client, and any value outside this set gets "Unsupported grant_type value".
KNOWN_GRANT_TYPES = frozenset(
    {
        "authorization_code",
        "password",
        "refresh_token",
        CLIENT_CREDENTIALS,
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:device_code",
        "iwa:ntlm",
    }
)
NO_CACHE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REPEATED_PARAMETERS = "Invalid request with repeated parameters."


class ClientAuthenticationError(Exception):
    """The request's client authentication is malformed: a bad Basic header, or credentials sent twice."""

    def __init__(self, malformed_header: bool) -> None:
        super().__init__("malformed Basic header" if malformed_header else "credentials in the header and the body")
        self.malformed_header = malformed_header


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str | None


def oauth_error(
    status: int,
    description: str,
    error: str,
    *,
    realm_host: str | None = None,
    content_type: str = "application/json",
) -> web.Response:
    """Build a WSO2-style OAuth error response. ``realm_host`` adds ``WWW-Authenticate: Basic realm=<host>``."""
    headers = {}
    if realm_host is not None:
        headers["WWW-Authenticate"] = f"Basic realm={realm_host}"
    body = compact_json({"error_description": description, "error": error})
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


def server_error() -> web.Response:
    return oauth_error(500, "Internal Server Error.", "server_error")


def realm_host(request: web.Request) -> str:
    """Return the host part of the request's Host header, which WSO2 uses as the Basic realm."""
    return request.url.host or request.host


def reset_connection(request: web.Request) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), so the client gets no response at all."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def read_client_credentials(request: web.Request, form: MultiDictProxy[str]) -> ClientCredentials | None:
    """Return the client credentials from HTTP Basic or the ``client_id``/``client_secret`` form fields.

    Returns None when the request carries neither. An ``Authorization`` header with another scheme
    counts as no header.

    Raises:
        ClientAuthenticationError: the Basic header is malformed, or a secret comes in both places.
    """
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    authorization = request.headers.get("Authorization", "")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        if form_id is None:
            return None
        secret = None if form_secret is None else str(form_secret)
        return ClientCredentials(client_id=str(form_id), client_secret=secret)

    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ClientAuthenticationError(malformed_header=True) from exc
    client_id, colon, client_secret = decoded.partition(":")
    if not colon or not client_id:
        raise ClientAuthenticationError(malformed_header=True)
    if form_secret is not None or (form_id is not None and form_id != client_id):
        raise ClientAuthenticationError(malformed_header=False)
    return ClientCredentials(client_id=client_id, client_secret=client_secret)


def _matches(given: str, expected: str) -> bool:
    # RFC 6749 section 2.3.1 form-encodes the id and secret before Basic encoding, and some clients
    # (authlib among them) do so while others send them raw. Accept both spellings.
    for candidate in {given, unquote_plus(given)}:
        if hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8")):
            return True
    return False


def _repeated_parameter(form: MultiDictProxy[str]) -> bool:
    return any(len(form.getall(name)) > 1 for name in set(form.keys()))


def _granted_scope(state: StandinState, requested: str | None) -> str:
    """Return the requested scopes the application may have, in request order, or the default scope."""
    granted: list[str] = []
    for scope in (requested or "").split():
        if scope in state.settings.allowed_scopes and scope not in granted:
            granted.append(scope)
    return " ".join(granted) if granted else state.settings.default_scope


async def _apply_endpoint_faults(request: web.Request, state: StandinState) -> web.Response | None:
    """Apply the token_endpoint fault and return the response that replaces the normal one, if any."""
    faults = state.faults
    if faults.token_endpoint == "down":
        reset_connection(request)
        # Nothing reaches the client because the transport is closed. The status only marks the access log.
        return web.Response(status=503)
    await pause(state, faults.token_delay_s())
    if faults.token_endpoint == "error":
        return server_error()
    return None


async def issue_token(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    state.stats.token_requests += 1
    response = await _respond_to_token_request(request, state)
    if response.status != 200:
        state.stats.token_errors += 1
    return response


async def _respond_to_token_request(request: web.Request, state: StandinState) -> web.Response:
    fault_response = await _apply_endpoint_faults(request, state)
    if fault_response is not None:
        return fault_response

    if request.content_type != FORM_CONTENT_TYPE:
        # NOTE: invented body. WSO2's JAX-RS endpoint responds with 415 here, but its body is not documented.
        return oauth_error(
            415, f"Unsupported Content-Type. Send the request as {FORM_CONTENT_TYPE}.", "invalid_request"
        )
    form = await request.post()
    if _repeated_parameter(form):
        return oauth_error(400, REPEATED_PARAMETERS, "invalid_request")

    host = realm_host(request)
    try:
        credentials = read_client_credentials(request, form)
    except ClientAuthenticationError:
        return oauth_error(401, "Client Authentication failed.", "invalid_client", realm_host=host)
    if credentials is not None:
        rejection = _check_client(state, credentials, form.get("orgHandle"), host)
        if rejection is not None:
            return rejection

    # WSO2 validates the grant type before it reports the missing client_id.
    grant_type = form.get("grant_type")
    rejection = _check_grant_type(grant_type)
    if rejection is not None:
        return rejection
    if credentials is None:
        return oauth_error(400, "Missing parameters: client_id", "invalid_request")
    if grant_type != CLIENT_CREDENTIALS:
        return oauth_error(
            400,
            "The authenticated client is not authorized to use this authorization grant type",
            "unauthorized_client",
        )
    return _grant_token(request, state, credentials.client_id, _granted_scope(state, form.get("scope")))


def _check_client(
    state: StandinState, credentials: ClientCredentials, org_handle: str | None, host: str
) -> web.Response | None:
    """Return the 401 for an unknown client or a wrong secret, or None when the client authenticates."""
    settings = state.settings
    unknown_client = credentials.client_id != settings.client_id
    # NOTE: invented behaviour. An orgHandle naming another organization makes the client unknown,
    # as in WSO2's per-tenant client lookup. Choreo's real response is not published.
    if settings.org_handle is not None and org_handle is not None and org_handle != settings.org_handle:
        unknown_client = True
    if unknown_client:
        return oauth_error(
            401,
            f"A valid OAuth client could not be found for client_id: {credentials.client_id}",
            "invalid_client",
            realm_host=host,
        )
    if credentials.client_secret is None or not _matches(credentials.client_secret, settings.client_secret):
        return oauth_error(401, "Client credentials are invalid.", "invalid_client", realm_host=host)
    return None


def _check_grant_type(grant_type: str | None) -> web.Response | None:
    """Return the 400 for a missing or unknown grant type, or None for a grant type WSO2 supports."""
    if not grant_type:
        return oauth_error(400, "Missing grant_type parameter value", "invalid_request")
    if grant_type not in KNOWN_GRANT_TYPES:
        return oauth_error(400, "Unsupported grant_type value", "invalid_request")
    return None


def _grant_token(request: web.Request, state: StandinState, client_id: str, scope: str) -> web.Response:
    faults = state.faults
    grant = state.tokens.grant(
        client_id=client_id,
        scope=scope,
        issuer=f"{request.scheme}://{request.host}/oauth2/token",
        lifetime_s=faults.token_lifetime_s,
        reissue=faults.reissue,
        revocation_delay_s=faults.revocation_delay_s,
    )
    if grant.reused:
        state.stats.tokens_reused += 1
    else:
        state.stats.tokens_issued += 1
    if grant.revoked_previous is not None:
        state.stats.reissue_revocations += 1
    logger.debug(
        "Stand-in token granted: jti=%s reused=%s expires_in=%d", grant.token.jti, grant.reused, grant.expires_in
    )

    # Field order as in WSO2's token response, with expires_in as an integer.
    body = compact_json(
        {"access_token": grant.token.value, "scope": scope, "token_type": "Bearer", "expires_in": grant.expires_in}
    )
    return web.Response(body=body, content_type="application/json", headers=NO_CACHE_HEADERS)


async def revoke_token(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    state.stats.revoke_requests += 1
    fault_response = await _apply_endpoint_faults(request, state)
    if fault_response is not None:
        return fault_response

    form = await request.post()
    if _repeated_parameter(form):
        return oauth_error(400, REPEATED_PARAMETERS, "invalid_request")
    host = realm_host(request)
    credentials = _authenticate_revoke_client(request, state, form, host)
    if isinstance(credentials, web.Response):
        return credentials

    value = form.get("token")
    if not value:
        return oauth_error(400, "Invalid revocation request", "invalid_request")

    # RFC 7009: unknown, expired and already revoked tokens get the same 200 as a revoked one, but
    # WSO2 adds the RevokedAccessToken and AuthorizedUser headers only when it revoked something.
    headers = dict(NO_CACHE_HEADERS)
    token = state.tokens.find_by_value(str(value))
    if token is not None and token.is_active(state.now()):
        if token.client_id != credentials.client_id:
            return oauth_error(401, "Client Authentication failed.", "unauthorized_client", realm_host=host)
        state.tokens.revoke(token, state.faults.revocation_delay_s)
        state.stats.revocations += 1
        logger.debug("Stand-in token revoked: jti=%s", token.jti)
        headers["RevokedAccessToken"] = token.value
        headers["AuthorizedUser"] = token.owner
    return web.Response(body=b"", content_type="application/json", headers=headers)


def _authenticate_revoke_client(
    request: web.Request, state: StandinState, form: MultiDictProxy[str], host: str
) -> ClientCredentials | web.Response:
    """Return the authenticated client's credentials, or the revoke endpoint's 401 (labelled text/html, sic)."""
    try:
        credentials = read_client_credentials(request, form)
    except ClientAuthenticationError as exc:
        description = "Client Authentication failed."
        if exc.malformed_header:
            description = "Client Authentication failed. Invalid Authorization Header."
        return oauth_error(401, description, "invalid_client", realm_host=host, content_type="text/html")

    settings = state.settings
    if (
        credentials is None
        or credentials.client_id != settings.client_id
        or credentials.client_secret is None
        or not _matches(credentials.client_secret, settings.client_secret)
    ):
        return oauth_error(
            401, "Client Authentication failed.", "invalid_client", realm_host=host, content_type="text/html"
        )
    return credentials


async def get_jwks(request: web.Request) -> web.Response:
    state = request.app[STANDIN_STATE]
    return web.Response(body=compact_json(state.signing_key.jwks()), content_type="application/json")


def add_sts_routes(app: web.Application) -> None:
    app.router.add_post("/oauth2/token", issue_token)
    app.router.add_post("/oauth2/revoke", revoke_token)
    app.router.add_get("/oauth2/jwks", get_jwks)
