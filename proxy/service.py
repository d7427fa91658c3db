"""The response to one GraphQL request: from the cache, a merged call in flight, or upstream.

A cache hit needs no token: the token manager is reached only when the upstream is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .cache import CachedAnswer, InFlight, ResponseCache
from .config import CacheSettings
from .errors import ProxyError
from .forwarding import Forwarder, UpstreamAnswer
from .query import GraphQLRequest

NAME = "insights-proxy"

try:  # orjson decodes response bodies several times faster than json; it is optional
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads


@dataclass(slots=True)
class Directives:
    """The request's cache directives (`Cache-Control`) and validator (`If-None-Match`)."""

    no_cache: bool = False
    no_store: bool = False
    if_none_match: str | None = None


NO_DIRECTIVES = Directives()  # shared by every request without cache headers; never changed


@dataclass(slots=True)
class Outcome:
    """The response to send to the client, and what to log about it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False)
    cache_status: str
    upstream_status: int | None = None
    upstream_s: float | None = None
    code: str | None = None


class GraphQLService:
    """Respond to `GraphQLRequest`s from the cache or through the `Forwarder`."""

    def __init__(self, settings: CacheSettings, cache: ResponseCache,
                 forwarder: Forwarder, *, clock: Callable[[], float],
                 on_lookup: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._cache = cache
        self._forwarder = forwarder
        self._clock = clock
        self._flights: InFlight[tuple[UpstreamAnswer, bool, str | None]] = InFlight()
        self._on_lookup = on_lookup or (lambda kind: None)

    @property
    def cache(self) -> ResponseCache:
        return self._cache

    def fresh_hit(self, request: GraphQLRequest, directives: Directives) -> Outcome | None:
        """Return the response for a fresh cache entry the request may use, or None."""
        if (not self._cache.enabled or directives.no_cache or directives.no_store
                or not request.is_query):
            return None
        entry = self._cache.lookup(request.cache_key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.fresh_until:
            return None
        self._on_lookup("hit")
        return self._hit(entry, now, directives)

    async def answer(self, request: GraphQLRequest, directives: Directives,
                     request_id: str) -> Outcome:
        """Respond to a request that `fresh_hit` did not serve: upstream, merged or stale.

        Callers try `fresh_hit` first and call this only when it returned None, with no await
        in between, so a fresh entry is not looked up twice.
        """
        if not request.is_query:
            answer = await self._forwarder.send(request.upstream_body, request_id)
            return _forwarded(answer, "fwd=uncacheable", etag=None)
        if directives.no_store:
            answer = await self._forwarder.send(request.upstream_body, request_id)
            etag = _etag_for(answer) if self._cache.enabled else None
            return _forwarded(answer, "fwd=request", etag=etag)

        # The entry is needed only to serve it stale if the upstream fails.
        entry = (self._cache.lookup(request.cache_key)
                 if self._cache.enabled and self._settings.stale_if_error_s > 0 else None)
        self._on_lookup("miss")
        try:
            (answer, stored, etag), joined = await self._flights.run(
                request.cache_key, lambda: self._fetch_and_store(request, request_id))
        except ProxyError as exc:
            stale = self._stale(entry, exc.status)
            if stale is None:
                raise
            return stale
        if answer.status >= 500 or answer.status == 429:
            stale = self._stale(entry, answer.status)
            if stale is not None:
                return stale
        if joined:
            self._on_lookup("merged")
        return _forwarded(answer, self._miss_status(directives, stored, joined),
                          etag=etag, if_none_match=directives.if_none_match)

    async def _fetch_and_store(self, request: GraphQLRequest,
                               request_id: str) -> tuple[UpstreamAnswer, bool, str | None]:
        """Forward once for every waiter, computing the JSON check and the ETag once for all.

        With the cache off nothing is stored or revalidated, so the response passes through
        without them. The JSON check alone costs about a tenth of a forwarded request.
        """
        answer = await self._forwarder.send(request.upstream_body, request_id)
        if not self._cache.enabled:
            return answer, False, None
        etag = _etag_for(answer)
        if etag is None:
            return answer, False, None
        now = self._clock()
        entry = CachedAnswer(status=answer.status, headers=tuple(answer.headers),
                             body=answer.body, etag=etag,
                             stored_at=now, fresh_until=now + self._settings.ttl_s)
        return answer, self._cache.store(request.cache_key, entry), etag

    def _miss_status(self, directives: Directives, stored: bool, joined: bool) -> str:
        if not self._cache.enabled:
            reason = "fwd=bypass"
        elif directives.no_cache:
            reason = "fwd=request"
        else:
            reason = "fwd=miss"
        if joined:
            reason += "; collapsed"
        if stored:
            reason += "; stored"
        return reason

    def _hit(self, entry: CachedAnswer, now: float, directives: Directives) -> Outcome:
        outcome = _from_entry(entry, now, "")
        if directives.if_none_match and _etag_matches(directives.if_none_match, entry.etag):
            outcome.status, outcome.body = 304, b""
        return outcome

    def _stale(self, entry: CachedAnswer | None, failed_status: int) -> Outcome | None:
        if entry is None or self._settings.stale_if_error_s <= 0:
            return None
        now = self._clock()
        if now >= entry.fresh_until + self._settings.stale_if_error_s:
            return None
        self._on_lookup("stale")
        return _from_entry(entry, now, f"; fwd=stale; fwd-status={failed_status}; "
                                       "detail=stale-if-error")


def _from_entry(entry: CachedAnswer, now: float, status_suffix: str) -> Outcome:
    """Build the response for a stored entry, with its ETag, Age and remaining ttl."""
    ttl = int(entry.fresh_until - now)
    age = int(now - entry.stored_at)
    headers = [*entry.headers, ("ETag", entry.etag), ("Age", str(age))]
    return Outcome(entry.status, headers, entry.body, f"hit; ttl={ttl}{status_suffix}")


def _storable(answer: UpstreamAnswer) -> bool:
    """Only a complete 200 JSON response with `data` and without `errors` may be stored."""
    if answer.status != 200:
        return False
    try:
        payload = _loads(answer.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(payload, dict) and "data" in payload and "errors" not in payload


def _etag_for(answer: UpstreamAnswer) -> str | None:
    """Return an ETag for a complete, cacheable response; errors and failures get none."""
    if not _storable(answer):
        return None
    return '"' + hashlib.blake2b(answer.body, digest_size=16).hexdigest() + '"'


def _etag_matches(header: str, etag: str) -> bool:
    # "*" is not honoured: it would turn a miss or an error response into an empty 304.
    candidates = [part.strip() for part in header.split(",")]
    return any(candidate.removeprefix("W/") == etag for candidate in candidates)


def _forwarded(answer: UpstreamAnswer, cache_status: str, *, etag: str | None,
               if_none_match: str | None = None) -> Outcome:
    headers = answer.headers  # shared by merged callers, so it is copied before a change
    if etag is not None:
        headers = [*headers, ("ETag", etag)]
        if if_none_match and _etag_matches(if_none_match, etag):
            return Outcome(304, headers, b"", cache_status, answer.status, answer.duration_s)
    return Outcome(answer.status, headers, answer.body, cache_status, answer.status,
                   answer.duration_s)
