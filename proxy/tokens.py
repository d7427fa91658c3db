"""The token manager: one valid access token, fetched with the client-credentials grant.

Rules it keeps:

- One token request at a time, however many requests wait for a token. The request runs in its
  own task, so a waiting client that goes away does not cancel it.
- Refresh ahead of expiry by `oauth.refresh_margin_s`, capped at a quarter of the lifetime so a
  short-lived token is not refreshed on every request. While the old token is still valid the
  refresh runs in the background and requests keep using the old token.
- Expiry is checked against the injected wall clock on every use, so a machine that wakes from
  sleep never sends a stale token. A token is not sent in its last half second either, so that
  it does not expire on the way to the gateway.
- A failed fetch is not sticky, but attempts back off exponentially with jitter: a dead endpoint
  is asked at most once per few seconds. Requests without a valid token fail fast with
  Retry-After in between and while a retry is in progress. Otherwise they wait at most two
  seconds for a token request in progress, except after a revocation and in the gap described
  below. A timer retries once the backoff has passed, so a recovered endpoint is noticed
  without waiting for a request.
- Some servers hand the active token back with the time it has left. Once that is seen, tokens
  are kept until they expire instead of being refreshed early, and the next token request waits
  until the server's copy has surely expired, so the proxy never loops on the token endpoint.
  Requests arriving in that gap (about two seconds) wait for the new token rather than fail.
- A token that was revoked or rejected is never taken back from the endpoint.

This module and `forwarding` are the only places that catch aiohttp's exceptions.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import structlog
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oauth2.rfc7009.parameters import prepare_revoke_token_request

from .config import OAuthSettings
from .errors import TokenEndpointError, TokenEndpointUnavailable, TokenError
from .tokenstore import AccessToken, MemoryTokenStore, TokenStore, fingerprint

log = structlog.get_logger("insights_proxy.tokens")

# OAuth error codes that mean the configuration is wrong; retrying soon will not help.
CONFIGURATION_ERRORS = frozenset({
    "invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope",
    "unsupported_grant_type", "invalid_request", "access_denied",
})
REFRESH_SHARE = 0.25          # refresh no earlier than with a quarter of the lifetime left
# Token lifetimes are whole seconds and servers round the issue time down. A token may therefore
# expire up to a second before `sent_at + expires_in`, so it is dropped that much earlier.
EXPIRY_SAFETY_S = 1.0
# A request checked just before expiry still has to reach the gateway, so a token is not sent in
# the last half second of its estimated lifetime, or in the last twentieth of a lifetime under
# 10 s. Half a second is an estimate of the longest trip to the gateway worth allowing for.
TRANSIT_ALLOWANCE_S = 0.5
TRANSIT_ALLOWANCE_SHARE = 0.05
REISSUE_GRACE_S = 1.0         # wait past the expiry of a handed-back token before asking again
REISSUE_ATTEMPTS = 3
REISSUE_MEMORY_S = 600.0
TRANSIENT_BACKOFF = (2.0, 60.0)        # first delay and cap, seconds
CONFIGURATION_BACKOFF = (30.0, 300.0)
# A request without a valid token waits this long for a token request in progress, then gets
# 503 while the attempt goes on in the background (up to oauth.timeout_s).
ATTEMPT_WAIT_S = 2.0


@dataclass(frozen=True)
class RevokeOutcome:
    """The revoke endpoint's response."""

    ok: bool
    status: int | None
    detail: str


class TokenManager:
    """Keep one valid access token for the configured OAuth client."""

    def __init__(
        self,
        oauth: OAuthSettings,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        store: TokenStore | None = None,
        on_fetch: Callable[[bool], None] | None = None,
    ) -> None:
        self._oauth = oauth
        self._session = session
        self._clock = clock
        self._store = store if store is not None else MemoryTokenStore()
        self._on_fetch = on_fetch
        self._auth = ClientAuth(oauth.client_id, oauth.client_secret.get_secret_value(),
                                oauth.auth_method)
        self._task: asyncio.Task[AccessToken] | None = None
        # Event loop time after which requests no longer wait for `_task`.
        self._wait_until = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._unusable: deque[str] = deque(maxlen=64)
        self._reissue_seen_at = -math.inf  # when the server last handed the same token back
        self._last_value: str | None = None
        self._fetch_not_before = 0.0
        self.consecutive_failures = 0
        self.last_error: TokenError | None = None
        self._retry_at = 0.0
        self._retry_delay = 0.0
        self.last_revocation: RevokeOutcome | None = None
        self.last_revoked: AccessToken | None = None
        self._retry_handle: asyncio.TimerHandle | None = None

    # -- using the token -------------------------------------------------------------------

    def usable(self) -> AccessToken | None:
        """Return the held token if it may be sent now, or None; start a refresh that is due."""
        now = self._clock()
        token = self._store.get()
        if token is not None and _sendable(token, now) and token.value not in self._unusable:
            if now >= token.refresh_at:
                self._refresh_in_background()
            return token
        return None

    async def get(self) -> AccessToken:
        """Return a token valid now, fetching one if needed; raise `TokenError` on failure."""
        token = self.usable()
        if token is not None:
            return token
        unusable = self._store.get()
        if unusable is not None:
            self._store.discard(unusable.value)
        return await self._shared_fetch(force=False)

    def reject(self, value: str) -> None:
        """Forget a token the upstream refused, so that the next request obtains a new one."""
        self._unusable.append(value)
        if self._store.discard(value):
            log.info("token.dropped", fingerprint=fingerprint(value), reason="rejected upstream")

    async def refresh(self) -> AccessToken:
        """Obtain a new token now, ignoring the backoff; the old one is not revoked."""
        return await self._shared_fetch(force=True)

    def current(self) -> AccessToken | None:
        return self._store.get()

    def status_clock(self) -> float:
        return self._clock()

    # -- revocation ------------------------------------------------------------------------

    async def revoke_and_replace(self) -> tuple[AccessToken | None, RevokeOutcome | None]:
        """Drop and revoke the current token (RFC 7009), then obtain a new one.

        Requests that need a token meanwhile wait for the new one instead of failing, and the
        revoked token is never accepted back from the endpoint. Raises `TokenError` when no new
        token could be obtained; the outcome of the revocation is then in `last_revocation`.
        """
        while self._task is not None:
            await asyncio.gather(asyncio.shield(self._task), return_exceptions=True)
        token = self._store.get()
        self.last_revocation = None
        if token is None:
            return None, None
        self._unusable.append(token.value)
        self._store.discard(token.value)
        self.last_revoked = token
        self._task = asyncio.ensure_future(self._revoke_then_fetch(token.value))
        self._task.add_done_callback(self._fetch_done)
        self._wait_until = math.inf
        await asyncio.shield(self._task)
        return token, self.last_revocation

    async def _revoke_then_fetch(self, value: str) -> AccessToken:
        self.last_revocation = await self._send_revocation(value)
        log.info("token.revoked", fingerprint=fingerprint(value),
                 outcome="ok" if self.last_revocation.ok else "failed",
                 detail=self.last_revocation.detail)
        self._fetch_not_before = 0.0
        return await self._fetch()

    async def _send_revocation(self, value: str) -> RevokeOutcome:
        body, headers = prepare_revoke_token_request(value, "access_token")
        try:
            status, raw = await self._post_form(self._oauth.revoke_url, headers, body)
        except asyncio.TimeoutError:
            return RevokeOutcome(False, None, f"revoke endpoint timed out after "
                                 f"{self._oauth.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return RevokeOutcome(False, None, f"revoke endpoint unreachable: {type(exc).__name__}")
        if status == 200:
            return RevokeOutcome(True, status, "revoked")
        oauth_error = _oauth_error_code(raw)
        detail = f"revoke endpoint responded with HTTP {status}"
        if oauth_error:
            detail += f" with error {oauth_error!r}"
        return RevokeOutcome(False, status, detail)

    # -- fetching --------------------------------------------------------------------------

    def _refresh_in_background(self) -> None:
        if self._task is not None or self._backoff_left() > 0:
            return
        task = asyncio.ensure_future(self._background_refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_refresh(self) -> None:
        try:
            await self._shared_fetch(force=False)
        except TokenError:
            pass  # already logged; requests keep the old token while it lasts

    async def _shared_fetch(self, *, force: bool) -> AccessToken:
        if self._task is None:
            wait_s = self._backoff_left()
            if not force and wait_s > 0 and self.last_error is not None:
                raise self._fail_fast(wait_s)
            self._task = asyncio.ensure_future(self._fetch(immediate=force))
            self._task.add_done_callback(self._fetch_done)
            self._wait_until = asyncio.get_running_loop().time() + ATTEMPT_WAIT_S
        elif not force and self.last_error is not None:
            # The endpoint is failing and a retry can take up to oauth.timeout_s to fail
            # again, so requests get 503 at once instead of waiting for it.
            raise self._with_retry_after(
                self.last_error, 1.0, f"{self.last_error.message}; a new attempt is in progress")
        if force:
            # shield: a cancelled waiter must not cancel the request the others wait for
            return await asyncio.shield(self._task)
        return await self._wait_for_attempt(self._task)

    async def _wait_for_attempt(self, task: asyncio.Task[AccessToken]) -> AccessToken:
        """Wait for the token request in progress, but not past `_wait_until`, which may move."""
        loop = asyncio.get_running_loop()
        while (left := self._wait_until - loop.time()) > 0:
            try:
                return await asyncio.wait_for(asyncio.shield(task), left)
            except asyncio.TimeoutError:
                continue
        raise TokenEndpointUnavailable(
            f"token endpoint {self._oauth.token_url} has not responded within "
            f"{ATTEMPT_WAIT_S:g} s; the token request goes on in the background",
            retry_after_s=1.0)

    def _backoff_left(self) -> float:
        """Return the seconds until the next attempt is allowed (0 when it is due).

        A wall clock set back during the backoff does not stretch it past the delay chosen.
        """
        left = self._retry_at - self._clock()
        if left > self._retry_delay:
            self._retry_at = self._clock() + self._retry_delay
            left = self._retry_delay
        return max(0.0, left)

    def _fetch_done(self, task: asyncio.Task[AccessToken]) -> None:
        self._task = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unwatched failure is not reported twice

    def _fail_fast(self, wait_s: float) -> TokenError:
        error = self.last_error
        return self._with_retry_after(error, wait_s, f"{error.message}; next attempt in "
                                                     f"{wait_s:.0f} s")

    @staticmethod
    def _with_retry_after(error: TokenError, wait_s: float,
                          message: str | None = None) -> TokenError:
        """Copy a token error with a Retry-After of `wait_s`, keeping its type and OAuth code."""
        message = error.message if message is None else message
        if isinstance(error, TokenEndpointError):
            return TokenEndpointError(message, oauth_error=error.oauth_error, retry_after_s=wait_s)
        return TokenEndpointUnavailable(message, retry_after_s=wait_s)

    async def _fetch(self, *, immediate: bool = False) -> AccessToken:
        """Request a token; `immediate` (an operator's refresh) makes one attempt at once."""
        for _ in range(1 if immediate else REISSUE_ATTEMPTS):
            wait = self._fetch_not_before - self._clock()
            if wait > 0 and not immediate:
                # Waiting for a handed-back token to expire is deliberate, so requests wait too.
                self._wait_until = max(self._wait_until,
                                       asyncio.get_running_loop().time() + wait + ATTEMPT_WAIT_S)
                await asyncio.sleep(wait)
            sent_at = self._clock()
            try:
                token = await self._request_token(sent_at)
            except TokenError as exc:
                delay = self._record_failure(exc)
                raise self._with_retry_after(exc, delay) from exc
            if token is not None:
                self._record_success(token)
                return token
            log.info("token.handed_back_expiring", retry_in_s=round(
                self._fetch_not_before - self._clock(), 1))
        if immediate:
            wait = max(0.0, self._fetch_not_before - self._clock())
            raise TokenEndpointUnavailable(
                f"token endpoint {self._oauth.token_url} handed back the current token, which "
                f"is about to expire; a new one can be obtained in {wait:.0f} s",
                retry_after_s=max(1.0, wait))
        error = TokenEndpointUnavailable(f"token endpoint {self._oauth.token_url} keeps handing "
                                         "back a token that is about to expire")
        delay = self._record_failure(error)
        raise self._with_retry_after(error, delay)

    async def _post_form(self, url: str, headers: dict[str, str],
                         body: str) -> tuple[int, bytes]:
        """POST a form with the client authentication; aiohttp's errors reach the caller."""
        url, headers, body = self._auth.prepare("POST", url, headers, body)
        timeout = aiohttp.ClientTimeout(total=self._oauth.timeout_s)
        async with self._session.post(url, data=body, headers=headers, timeout=timeout,
                                      allow_redirects=False) as response:
            return response.status, await response.read()

    async def _request_token(self, sent_at: float) -> AccessToken | None:
        extra = dict(self._oauth.extra_params)
        if self._oauth.scope:
            extra["scope"] = self._oauth.scope
        body = prepare_token_request("client_credentials", **extra)
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        try:
            status, raw = await self._post_form(self._oauth.token_url, headers, body)
        except asyncio.TimeoutError:
            raise TokenEndpointUnavailable(
                f"token endpoint {self._oauth.token_url} did not respond within "
                f"{self._oauth.timeout_s:g} s (oauth.timeout_s)") from None
        except aiohttp.ClientError as exc:
            raise TokenEndpointUnavailable(
                f"token endpoint {self._oauth.token_url} is unreachable "
                f"({type(exc).__name__}); check oauth.token_url and the network") from exc
        return self._parse_token_response(status, raw, sent_at)

    def _parse_token_response(self, status: int, raw: bytes,
                              sent_at: float) -> AccessToken | None:
        url = self._oauth.token_url
        if status != 200:
            oauth_error = _oauth_error_code(raw)
            if oauth_error in CONFIGURATION_ERRORS and 400 <= status < 500:
                raise TokenEndpointError(
                    f"token endpoint {url} rejected the credentials: HTTP {status}, OAuth error "
                    f"{oauth_error!r}; check oauth.client_id, the client secret, oauth.scope "
                    "and oauth.extra_params", oauth_error=oauth_error)
            raise TokenEndpointUnavailable(f"token endpoint {url} responded with HTTP {status}")
        payload = _json_object(raw)
        if payload is None:
            raise TokenEndpointUnavailable(f"token endpoint {url} returned 200 without a JSON "
                                           "object")
        value = payload.get("access_token")
        if not isinstance(value, str) or not value:
            raise TokenEndpointUnavailable(f"token endpoint {url} returned 200 without "
                                           "access_token")
        token_type = payload.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenEndpointError(f"token endpoint {url} issued a token of type "
                                     f"{token_type!r}; only Bearer tokens can be used")
        lifetime = _lifetime(payload.get("expires_in"), self._oauth.default_lifetime_s)
        if lifetime is None:
            raise TokenEndpointUnavailable(f"token endpoint {url} returned an invalid "
                                           f"expires_in {payload.get('expires_in')!r}")
        if value in self._unusable:
            raise TokenEndpointUnavailable(f"token endpoint {url} handed back a token that was "
                                           "revoked or rejected")
        return self._make_token(value, sent_at, lifetime)

    def _make_token(self, value: str, sent_at: float, lifetime: float) -> AccessToken | None:
        """Build the token, or return None when it was handed back with no usable time left."""
        reissued = value == self._last_value
        usable_s = lifetime - EXPIRY_SAFETY_S
        if reissued:
            self._reissue_seen_at = sent_at
        # Remembered for a while, not forever, so a server whose setting changes is relearnt.
        if sent_at - self._reissue_seen_at < REISSUE_MEMORY_S:
            # Asking before the server's copy has surely expired only hands the same token back.
            self._fetch_not_before = sent_at + lifetime + REISSUE_GRACE_S
            if usable_s <= 0:
                return None
            expires_at = refresh_at = sent_at + usable_s
        else:
            if usable_s <= 0:
                raise TokenEndpointUnavailable(
                    f"token endpoint {self._oauth.token_url} issued a token that lives only "
                    f"{lifetime:g} s; check the application's token expiry time")
            expires_at = sent_at + usable_s
            refresh_at = expires_at - min(self._oauth.refresh_margin_s, usable_s * REFRESH_SHARE)
        return AccessToken(value=value, obtained_at=sent_at, expires_at=expires_at,
                           refresh_at=refresh_at, reissued=reissued)

    def _schedule_retry(self, delay: float) -> None:
        """Retry in the background after the backoff, so a recovered endpoint is noticed
        without waiting for a request, and `/readyz` turns ready by itself."""
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._retry_handle = loop.call_later(delay + 0.01, self._retry_if_needed)

    def _retry_if_needed(self) -> None:
        self._retry_handle = None
        left = self._backoff_left()
        if left > 0:
            # The event loop's clock ran ahead of the wall clock, so wait for the rest.
            self._schedule_retry(left)
            return
        token = self._store.get()
        if token is None or self._clock() >= token.refresh_at:
            self._refresh_in_background()

    def _record_success(self, token: AccessToken) -> None:
        self._store.set(token)
        self._last_value = token.value
        self.consecutive_failures = 0
        self.last_error = None
        self._retry_at = 0.0
        self._retry_delay = 0.0
        if self._on_fetch is not None:
            self._on_fetch(True)
        log.info("token.obtained", fingerprint=token.fingerprint,
                 lifetime_s=round(token.lifetime_s, 1), reissued=token.reissued)

    def _record_failure(self, error: TokenError) -> float:
        """Count a failed attempt, start the backoff and return its delay in seconds."""
        self.consecutive_failures += 1
        self.last_error = error
        first, cap = (CONFIGURATION_BACKOFF if isinstance(error, TokenEndpointError)
                      else TRANSIENT_BACKOFF)
        delay = min(cap, first * 2 ** (self.consecutive_failures - 1))
        delay *= random.uniform(0.75, 1.0)
        self._retry_at = self._clock() + delay
        self._retry_delay = delay
        if self._on_fetch is not None:
            self._on_fetch(False)
        self._schedule_retry(delay)
        log.warning("token.fetch_failed", error=error.message, code=error.code,
                    attempt=self.consecutive_failures, retry_in_s=round(delay, 1))
        return delay

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Describe the token for the admin routes: no token value, only its fingerprint."""
        now = self._clock()
        token = self._store.get()
        usable = token is not None and _sendable(token, now)
        if not usable:
            state = "failing" if self.consecutive_failures else "none"
        elif now >= token.refresh_at:
            state = "failing" if self.consecutive_failures else "expiring"
        else:
            state = "valid"
        return {
            "state": state,
            "fingerprint": token.fingerprint if usable else None,
            "expires_at": _iso(token.expires_at) if usable else None,
            "expires_in_s": round(token.expires_at - now, 1) if usable else None,
            "obtained_at": _iso(token.obtained_at) if usable else None,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error.message if self.last_error else None,
            "last_error_code": self.last_error.code if self.last_error else None,
        }

    async def close(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        tasks = [*self._background, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sendable(token: AccessToken, now: float) -> bool:
    """Tell whether a token still has more than the transit allowance left before it expires."""
    allowance = min(TRANSIT_ALLOWANCE_S, token.lifetime_s * TRANSIT_ALLOWANCE_SHARE)
    return now < token.expires_at - allowance


def _json_object(raw: bytes) -> dict | None:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _oauth_error_code(raw: bytes) -> str | None:
    payload = _json_object(raw)
    if payload is None:
        return None
    error = payload.get("error")
    return error if isinstance(error, str) and len(error) <= 64 else None


def _lifetime(expires_in: object, default: float) -> float | None:
    """Read `expires_in` (a number, or a numeric string as some servers send); None if invalid."""
    if expires_in is None:
        return default
    if isinstance(expires_in, bool):
        return None
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in.strip())
        except ValueError:
            return None
    if not isinstance(expires_in, (int, float)) or not expires_in > 0 or expires_in > 10**9:
        return None
    return float(expires_in)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
