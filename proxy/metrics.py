"""Prometheus metrics, one registry per proxy process (tests run several proxies at once).

Per-request counts live in plain integers and lists, which become metric families when
scraped. prometheus-client's own counters and histograms take a lock on every update, and
those locks cost about a tenth of a cache hit. Every update and every scrape runs on the event
loop's thread, so nothing here needs a lock.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from . import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class LoopHistogram:
    """A histogram updated from the event loop's thread only."""

    __slots__ = ("name", "documentation", "bounds", "counts", "sum")

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Buckets are "less than or equal": bisect_left finds the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(_bound_label, self.bounds), "+Inf"), self.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                     sum_value=self.sum)


class RequestMetrics:
    """Per-request counters and histograms, exposed through a registry as a collector."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.upstream_requests: dict[str, int] = {}
        self.lookups = dict.fromkeys(LOOKUP_KINDS, 0)
        self.request_duration = LoopHistogram(
            "insights_proxy_request_duration_seconds", "Time to handle a request, end to end.",
            LATENCY_BUCKETS)
        self.upstream_duration = LoopHistogram(
            "insights_proxy_upstream_duration_seconds", "Time the Insights API took to respond.",
            LATENCY_BUCKETS)
        self.overhead = LoopHistogram(
            "insights_proxy_overhead_seconds",
            "Time spent in the proxy itself: request time minus upstream time.", OVERHEAD_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "insights_proxy_requests", "Requests handled on the GraphQL endpoint.",
            labels=["status", "code", "cache", "client"])
        for labels, value in self.requests.items():
            requests.add_metric(labels, value)
        yield requests
        yield self.request_duration.family()
        yield self.upstream_duration.family()
        yield self.overhead.family()
        upstream = CounterMetricFamily(
            "insights_proxy_upstream_requests", "Requests sent to the Insights API, by status.",
            labels=["status"])
        for status, value in self.upstream_requests.items():
            upstream.add_metric([status], value)
        yield upstream
        for kind, documentation in LOOKUP_KINDS.items():
            yield CounterMetricFamily(f"insights_proxy_cache_{kind}", documentation,
                                      value=self.lookups[kind])


LOOKUP_KINDS = {
    "hits": "Requests served from the cache.",
    "misses": "Cacheable requests that were not served from the cache.",
    "merged": "Requests that waited for an identical request already upstream.",
    "stale": "Expired responses served because the upstream or token endpoint failed.",
}
# `GraphQLService` reports lookups as "hit" and "miss".
LOOKUP_NAMES = {"hit": "hits", "miss": "misses", "merged": "merged", "stale": "stale"}
# Distinct label sets kept for the requests counter. Client names come from the configuration,
# so the bound is reached only if statuses and codes vary far more than they do.
MAX_REQUEST_SERIES = 4096


def _bound_label(bound: float) -> str:
    # The same text prometheus-client writes for its own bucket bounds.
    return repr(float(bound))


class Metrics:
    """The proxy's metrics; `render` returns the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.per_request = RequestMetrics()
        r.register(self.per_request)

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

        build = Info("insights_proxy_build", "Version of the proxy and of Python.", registry=r)
        build.info({"version": __version__, "python": platform.python_version()})

    def record_request(self, status: int, code: str, cache: str, client: str, elapsed_s: float,
                       upstream_s: float | None, upstream_status: int | None) -> None:
        """Count one completed request and its timings."""
        per_request = self.per_request
        key = (str(status), code, cache, client)
        count = per_request.requests.get(key)
        if count is not None:
            per_request.requests[key] = count + 1
        elif len(per_request.requests) < MAX_REQUEST_SERIES:
            per_request.requests[key] = 1
        per_request.request_duration.observe(elapsed_s)
        if upstream_s is None:
            per_request.overhead.observe(elapsed_s)
            return
        per_request.upstream_duration.observe(upstream_s)
        per_request.overhead.observe(max(0.0, elapsed_s - upstream_s))
        label = str(upstream_status)
        per_request.upstream_requests[label] = per_request.upstream_requests.get(label, 0) + 1

    def count_lookup(self, kind: str) -> None:
        name = LOOKUP_NAMES.get(kind)
        if name is not None:
            self.per_request.lookups[name] += 1

    def count_fetch(self, success: bool) -> None:
        self.token_fetches.labels("success" if success else "failure").inc()

    def render(self, refresh: Callable[[], None] | None = None) -> bytes:
        if refresh is not None:
            refresh()
        return generate_latest(self.registry)
