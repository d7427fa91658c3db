"""Typed keys for what the aiohttp applications hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .metrics import Metrics
    from .reload import Reloader
    from .runtime import RuntimeHolder

RUNTIME: web.AppKey[RuntimeHolder] = web.AppKey("runtime", "RuntimeHolder")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", "Metrics")
RELOADER: web.AppKey[Reloader] = web.AppKey("reloader", "Reloader")
