"""Everything built from one configuration, swapped as a whole on reload.

Requests take the current `Runtime` when they start and keep it to the end, so in-flight
requests finish on the settings they started with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import structlog

from .cache import MemoryResponseCache
from .config import Settings
from .forwarding import Forwarder, create_session
from .log import register_secret
from .metrics import Metrics
from .query import QueryReader
from .security import ClientKeys, server_guards
from .service import GraphQLService
from .tokens import TokenManager

log = structlog.get_logger("insights_proxy.runtime")


class Runtime:
    """The session, token manager, cache and policies for one configuration."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float], metrics: Metrics,
                 previous: Runtime | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.in_flight = 0
        register_secret(settings.oauth.client_secret.get_secret_value())
        register_secret(settings.admin.token.get_secret_value())

        same_credential = previous is not None and _same_credential(previous.settings, settings)
        if same_credential:
            self.session: aiohttp.ClientSession = previous.session
            self.tokens: TokenManager = previous.tokens
            self.owns_session = True
            previous.owns_session = False  # ownership moves to the newer runtime
        else:
            self.session = create_session(settings)
            self.tokens = TokenManager(settings.oauth, self.session, clock=clock,
                                       on_fetch=metrics.count_fetch)
            self.owns_session = True

        same_cache = (previous is not None
                      and previous.settings.oauth.identity() == settings.oauth.identity()
                      and previous.settings.upstream.url == settings.upstream.url
                      and previous.settings.cache == settings.cache)
        cache = (previous.service.cache if same_cache and previous is not None
                 else MemoryResponseCache(settings.cache, clock=clock))
        self.forwarder = Forwarder(settings, self.session, self.tokens)
        self.service = GraphQLService(settings.cache, cache, self.forwarder, clock=clock,
                                      on_lookup=metrics.count_lookup)
        key_prefix = f"{settings.upstream.url}\n{settings.oauth.identity()}"
        self.reader = QueryReader(settings.query, default_variables=settings.upstream.default_variables,
                                  key_prefix=key_prefix)
        self.hosts, self.origins = server_guards(settings.server)
        if previous is not None and previous.settings.clients == settings.clients:
            self.clients = previous.clients  # keeps the rate-limit buckets across a reload
        else:
            self.clients = ClientKeys(settings.clients)
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    async def close(self, *, wait_s: float = 0.0) -> None:
        """Close what this runtime owns, after its in-flight requests finish (up to `wait_s`)."""
        if wait_s > 0:
            try:
                await asyncio.wait_for(self.idle.wait(), wait_s)
            except asyncio.TimeoutError:
                log.warning("runtime.close_timeout", in_flight=self.in_flight, waited_s=wait_s)
        if self.owns_session:
            await self.tokens.close()
            await self.session.close()


class RuntimeHolder:
    """The current runtime; replaced atomically by `swap`."""

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
        self.loaded_at = time.time()
        self.draining = False  # set at shutdown, so /readyz sends traffic elsewhere

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        self.loaded_at = time.time()
        return old


def _same_credential(old: Settings, new: Settings) -> bool:
    return (old.oauth == new.oauth and old.tls == new.tls
            and old.oauth.credential() == new.oauth.credential())
