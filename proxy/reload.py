"""Re-reading the configuration while running (`POST /admin/reload` and SIGHUP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .config import ConfigError, Settings, load_settings
from .errors import TokenEndpointError, TokenError
from .log import configure_logging
from .metrics import Metrics
from .runtime import Runtime, RuntimeHolder

log = structlog.get_logger("insights_proxy.reload")

# Changing these needs a restart: the listeners are already bound.
RESTART_KEYS = (("server", "host"), ("server", "port"), ("admin", "host"), ("admin", "port"))


class Reloader:
    """Build a new runtime from the configuration file and swap it in, or keep the old one."""

    def __init__(self, path: Path | None, holder: RuntimeHolder, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._holder = holder
        self._metrics = metrics
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def reload(self, *, source: str) -> tuple[bool, dict[str, Any]]:
        async with self._lock:
            old = self._holder.current
            try:
                new_settings = load_settings(self._path).settings
            except ConfigError as exc:
                log.error("config.reload_rejected", source=source, problems=exc.problems)
                return False, {"reloaded": False, "problems": exc.problems,
                               "message": "the configuration was not changed"}
            try:
                runtime = Runtime(new_settings, clock=self._clock, metrics=self._metrics,
                                  previous=old)
            except Exception as exc:  # noqa: BLE001 - a reload must never take the proxy down
                log.exception("config.reload_failed", source=source, error=type(exc).__name__)
                return False, {"reloaded": False, "problems": [
                    f"the new configuration could not be applied ({type(exc).__name__}); "
                    "see the proxy's log"], "message": "the configuration was not changed"}
            refused = await self._verify_credential(runtime, old)
            if refused is not None:
                log.error("config.reload_rejected", source=source, problems=[refused])
                return False, {"reloaded": False, "problems": [refused],
                               "message": "the configuration was not changed"}
            self._holder.swap(runtime)
            if new_settings.log != old.settings.log:
                configure_logging(new_settings.log.format, new_settings.log.level)
            task = asyncio.ensure_future(old.close(wait_s=old.settings.server.drain_timeout_s))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            detail = _describe_change(old.settings, new_settings, runtime)
            log.info("config.reloaded", source=source, **detail)
            return True, {"reloaded": True, **detail}

    async def _verify_credential(self, runtime: Runtime, old: Runtime) -> str | None:
        """Obtain a token with a changed credential before switching to it.

        A mistyped secret is then rejected while the old token still serves requests. When
        the token endpoint cannot be reached, the new credential is accepted unverified, since
        the old one may already be revoked at Choreo.
        """
        if runtime.tokens is old.tokens:
            return None
        try:
            await runtime.tokens.refresh()
        except TokenEndpointError as exc:
            await runtime.close()
            return (f"the token endpoint refused the new credential ({exc.oauth_error or exc.code}):"
                    f" {exc.message}")
        except TokenError as exc:
            log.warning("config.credential_unverified", error=exc.message)
        return None

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _describe_change(old: Settings, new: Settings, runtime: Runtime) -> dict[str, Any]:
    restart = [f"{section}.{key}" for section, key in RESTART_KEYS
               if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)]
    return {
        "credential_changed": old.oauth.credential() != new.oauth.credential(),
        "identity_changed": old.oauth.identity() != new.oauth.identity(),
        "cache_kept": runtime.service.cache is not None and old.oauth.identity() == new.oauth.identity()
        and old.upstream.url == new.upstream.url and old.cache == new.cache,
        "restart_required_for": restart,
    }
