"""Running the proxy: both listeners, signals, warm-up and a graceful drain on shutdown.

SIGTERM or SIGINT stops accepting, lets in-flight requests finish for up to
`server.drain_timeout_s`, closes the client sessions and returns 0; a second signal exits at
once with status 1. SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from . import __version__
from .admin import create_admin_app
from .app import create_proxy_server
from .config import LoadedSettings, Settings
from .errors import TokenError
from .log import ACCESS_LOG
from .metrics import Metrics
from .reload import Reloader
from .runtime import Runtime, RuntimeHolder

log = structlog.get_logger("insights_proxy.server")

CANCEL_GRACE_S = 0.5


class ListenError(Exception):
    """A listener could not be bound; the message names the address and the key to change."""


@dataclass
class Listeners:
    """The bound addresses, for printing and for tests that ask for port 0."""

    proxy_url: str
    admin_url: str


class ProxyServer:
    """Both listeners and what they share; `start` binds, `stop` drains and closes."""

    def __init__(self, loaded: LoadedSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings: Settings = loaded.settings
        self.metrics = Metrics()
        self.holder = RuntimeHolder(Runtime(self.settings, clock=clock, metrics=self.metrics))
        self.reloader = Reloader(loaded.path, self.holder, self.metrics, clock=clock)
        self._runners: list[web.BaseRunner] = []
        self._warmup: asyncio.Task[None] | None = None

    async def start(self) -> Listeners:
        server, admin = self.settings.server, self.settings.admin
        # The parser limits sit above ours, so oversize requests reach the handler and get
        # the documented 414 and 431 responses instead of aiohttp's plain 400.
        proxy_server = create_proxy_server(
            self.holder, access_log=None, max_line_size=server.max_url_bytes * 2,
            max_field_size=server.max_header_bytes * 2,
            # A client that goes away cancels its handler, which releases the upstream
            # connection it was waiting on.
            handler_cancellation=True)
        # The drain is done in `stop`; what is left after it is cancelled quickly (aiohttp may
        # wait this timeout twice).
        proxy_runner = web.ServerRunner(proxy_server, shutdown_timeout=CANCEL_GRACE_S)
        admin_runner = web.AppRunner(create_admin_app(self.holder, self.metrics, self.reloader),
                                     access_log=None, shutdown_timeout=1.0)
        proxy_port = await self._bind(proxy_runner, server.host, server.port, "server.port")
        admin_port = await self._bind(admin_runner, admin.host, admin.port, "admin.port")
        self._warmup = asyncio.ensure_future(self._obtain_first_token())
        listeners = Listeners(
            proxy_url=f"http://{_url_host(server.host)}:{proxy_port}{server.path}",
            admin_url=f"http://{_url_host(admin.host)}:{admin_port}",
        )
        log.info("proxy.started", version=__version__, proxy_url=listeners.proxy_url,
                 admin_url=listeners.admin_url, upstream=self.settings.upstream.url,
                 pid=os.getpid())
        return listeners

    async def _bind(self, runner: web.BaseRunner, host: str, port: int, key: str) -> int:
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              f"stop what uses it or choose another {key}") from None
        return runner.addresses[-1][1]

    async def _drain(self, timeout_s: float) -> None:
        runtime = self.holder.current
        if runtime.in_flight == 0:
            return
        try:
            await asyncio.wait_for(runtime.idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            log.warning("proxy.drain_timeout", in_flight=runtime.in_flight, waited_s=timeout_s)

    async def _obtain_first_token(self) -> None:
        try:
            await self.holder.current.tokens.get()
        except TokenError:
            pass  # logged by the token manager; requests will try again

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish for up to `server.drain_timeout_s`,
        cancel what is left, then close the admin listener and the client sessions."""
        drain_s = self.holder.current.settings.server.drain_timeout_s
        log.info("proxy.stopping", in_flight=self.holder.current.in_flight, drain_timeout_s=drain_s)
        self.holder.draining = True
        if self._warmup is not None:
            self._warmup.cancel()
        if self._runners:
            proxy_runner = self._runners[0]
            for site in list(proxy_runner.sites):
                await site.stop()
            await self._drain(drain_s)
        for runner in self._runners:
            await runner.cleanup()
        await self.reloader.close()
        await self.holder.current.close()
        ACCESS_LOG.flush()
        log.info("proxy.stopped")


async def run_until_signalled(server: ProxyServer,
                              on_ready: Callable[[Listeners], None] | None = None) -> int:
    """Start, wait for SIGTERM or SIGINT, then drain and stop; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop_signal() -> None:
        if stop.is_set():
            log.warning("proxy.forced_exit")
            os._exit(1)
        stop.set()

    def on_reload_signal() -> None:
        task = asyncio.ensure_future(server.reloader.reload(source="SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    reloads: set[asyncio.Task[object]] = set()
    listeners = await server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal)
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, on_reload_signal)
    if on_ready is not None:
        on_ready(listeners)
    await stop.wait()
    await server.stop()
    return 0


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
