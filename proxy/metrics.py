"""Prometheus metrics, one registry per proxy process (tests run several proxies at once)."""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from . import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class Metrics:
    """The proxy's metrics; `render` returns the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        self.requests = Counter(
            "insights_proxy_requests", "Requests handled on the GraphQL endpoint.",
            ["status", "code", "cache", "client"], registry=r)
        self.request_duration = Histogram(
            "insights_proxy_request_duration_seconds", "Time to handle a request, end to end.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram(
            "insights_proxy_upstream_duration_seconds", "Time the Insights API took to respond.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram(
            "insights_proxy_overhead_seconds",
            "Time spent in the proxy itself: request time minus upstream time.",
            buckets=OVERHEAD_BUCKETS, registry=r)
        self.upstream_requests = Counter(
            "insights_proxy_upstream_requests", "Requests sent to the Insights API, by status.",
            ["status"], registry=r)

        self.token_fetches = Counter(
            "insights_proxy_token_fetches", "Token requests sent to the token endpoint.",
            ["outcome"], registry=r)
        self.token_expires_in = Gauge(
            "insights_proxy_token_expires_in_seconds",
            "Seconds until the current token expires; 0 when none is held.", registry=r)
        for outcome in ("success", "failure"):
            self.token_fetches.labels(outcome)

        self.cache_entries = Gauge("insights_proxy_cache_entries", "Entries in the response cache.",
                                   registry=r)
        self.cache_bytes = Gauge("insights_proxy_cache_bytes",
                                 "Bytes of bodies and headers held in the response cache.",
                                 registry=r)
        self.cache_lookups = {
            kind: Counter(f"insights_proxy_cache_{kind}", help_text, registry=r)
            for kind, help_text in (
                ("hits", "Requests served from the cache."),
                ("misses", "Cacheable requests that were not served from the cache."),
                ("merged", "Requests that waited for an identical request already upstream."),
                ("stale", "Expired responses served because the upstream or token endpoint failed."),
            )
        }
        self._request_children: dict[tuple[int, str, str, str], Counter] = {}

        build = Info("insights_proxy_build", "Version of the proxy and of Python.", registry=r)
        build.info({"version": __version__, "python": platform.python_version()})

    def count_request(self, status: int, code: str, cache: str, client: str) -> None:
        """Count one completed request; label children are cached because this runs per request."""
        key = (status, code, cache, client)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(str(status), code, cache, client)
            if len(self._request_children) < 4096:
                self._request_children[key] = child
        child.inc()

    def count_lookup(self, kind: str) -> None:
        counter = self.cache_lookups.get({"hit": "hits", "miss": "misses"}.get(kind, kind))
        if counter is not None:
            counter.inc()

    def count_fetch(self, success: bool) -> None:
        self.token_fetches.labels("success" if success else "failure").inc()

    def render(self, refresh: Callable[[], None] | None = None) -> bytes:
        if refresh is not None:
            refresh()
        return generate_latest(self.registry)
