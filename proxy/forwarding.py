"""The upstream call: inject the token, send, and replay once on a 401.

This module and `tokens` are the only places that catch aiohttp's exceptions; they become the
proxy's own errors here, with the cause kept.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from time import perf_counter
from dataclasses import dataclass, field

import aiohttp
import structlog
from yarl import URL

from . import __version__
from .config import Settings
from .errors import UpstreamRejectedToken, UpstreamTimeout, UpstreamUnavailable
from .headers import response_headers
from .tokens import TokenManager

log = structlog.get_logger("insights_proxy.forwarding")

USER_AGENT = f"choreo-insights-proxy/{__version__}"
STATIC_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}
LARGE_BODY_BYTES = 2**20


@dataclass(slots=True)
class UpstreamAnswer:
    """An upstream response, read whole, with the headers that may reach the client."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False)
    duration_s: float = 0.0


def create_session(settings: Settings) -> aiohttp.ClientSession:
    """Create the one pooled client session for the upstream, token and revoke URLs."""
    context = ssl.create_default_context()
    if settings.tls.ca_file:
        context.load_verify_locations(cafile=settings.tls.ca_file)
    connector = aiohttp.TCPConnector(ssl=context, limit=settings.upstream.max_connections,
                                     ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        # No cookie may cross from one client's request to another's.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Decoded bodies are needed to check `errors` before caching; Content-Encoding is
        # therefore dropped from responses and framing is recomputed for the decoded bytes.
        auto_decompress=True,
        # Sent with every request; a request adds only its token and its id.
        headers=STATIC_HEADERS,
        trust_env=False,
    )


class Forwarder:
    """Send GraphQL requests to `upstream.url` with the current bearer token."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession,
                 tokens: TokenManager) -> None:
        self._url_text = settings.upstream.url
        # Parsed once: aiohttp parses a URL given as text on every request.
        self._url = URL(settings.upstream.url)
        self._timeout = aiohttp.ClientTimeout(total=settings.upstream.timeout_s)
        self._timeout_s = settings.upstream.timeout_s
        self._session = session
        self._tokens = tokens

    async def send(self, body: bytes, request_id: str) -> UpstreamAnswer:
        """Forward a JSON body; raise `TokenError` or `UpstreamError` when it cannot be done."""
        # Awaiting get() only when no token is held spares the coroutine in the usual case.
        token = self._tokens.usable() or await self._tokens.get()
        answer = await self._post(body, token.value, request_id)
        if answer.status != 401:
            return answer
        self._tokens.reject(token.value)
        log.info("upstream.token_rejected", fingerprint=token.fingerprint, replay=True)
        token = await self._tokens.get()
        answer = await self._post(body, token.value, request_id)
        if answer.status == 401:
            self._tokens.reject(token.value)
            raise UpstreamRejectedToken(
                "the Insights API rejected a freshly obtained token (HTTP 401); check that the "
                "application is subscribed to the Insights API and that upstream.url is right")
        return answer

    async def _post(self, body: bytes, token: str, request_id: str) -> UpstreamAnswer:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
        }
        started = perf_counter()
        try:
            # aiohttp warns about (and blocks the loop on) bytes bodies of 1 MiB or more.
            data = body if len(body) < LARGE_BODY_BYTES else io.BytesIO(body)
            async with self._session.post(self._url, data=data, headers=headers,
                                          allow_redirects=False,
                                          timeout=self._timeout) as response:
                raw = await response.read()
                return UpstreamAnswer(response.status, response_headers(response.headers), raw,
                                      perf_counter() - started)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"the Insights API did not respond within {self._timeout_s:g} s "
                                  "(upstream.timeout_s); try again or raise the timeout") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnavailable("the Insights API response was cut short or malformed "
                                      f"({type(exc).__name__}); try again") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"the Insights API at {self._url_text} cannot be reached "
                                      f"({type(exc).__name__}); try again later") from exc
