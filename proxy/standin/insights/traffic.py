"""Deterministic synthetic traffic of an organization, generated hour by hour.

Model
-----
The requests of one (organization, environment, API, UTC hour) are drawn from BLAKE2b digests of
``"<org uuid>|<environment id>|<api id>|<hour start>"``, salted with a block counter. No other
randomness is used, so every query, process and machine gets the same numbers. From those bytes
an hour gets:

* a request count per *leaf*, one leaf per (application, outcome) pair. Outcomes are success
  (2xx), errors returned by the gateway ("proxy": 401, 403, 429, 503, 504, 404 and 500, in the
  categories AUTH, THROTTLED, TARGET_CONNECTIVITY and OTHER) and errors returned by the backend
  ("target": 400, 404, 500 and 503). Requests rejected with 401 carry no application;
* response-cache hits and misses, for APIs with caching turned on;
* the p95 and median latency in ms of the response and of its backend, request-mediation and
  response-mediation phases;
* now and then an incident (a traffic surge, throttling, a backend outage or a latency
  regression) that shapes the hour's numbers and raises an alert.

The volume follows a daily curve in UTC (peak at 14:00, trough at 02:00) and is lower on
weekends. Inside an hour the requests of each leaf are spread evenly: the first ``m`` minutes hold
``n * m // 60`` of the hour's ``n`` requests. There is no data before ``Organization.data_start``
or after the start of the current minute of the injected clock.

Consistency rules
-----------------
1. Traffic is success plus errors, and errors are proxy errors plus target errors. This holds for
   every bucket, range, API and application.
2. Every count over a range equals the sum of the counts over any split of that range, because
   each leaf count is a difference of one cumulative function of time. The first and last
   buckets of a series count only their part inside the range, so a total equals the sum of its
   buckets at every granularity: ``getTotalTraffic`` equals the sum of
   ``getSuccessSummary`` plus the sum of ``getErrorSummary``, ``getTotalErrors`` the sum of
   ``getErrorSummary``, and ``getTotalTrafficByAPI`` the sum of that API's
   ``getAPIUsageOverTime`` buckets.
3. Organization totals are the sums of the per-API totals, and an API's traffic is the sum of its
   applications' traffic plus its unauthenticated (401) requests. Real Choreo organization totals
   are reported to include internal and system traffic and can then exceed the per-API sums. The
   stand-in keeps them equal.
4. Latencies are not additive. The latency of a span is the request-weighted mean of the hourly
   p95 (or median) values, an approximation of the span's percentile.
5. Breakdowns by resource, platform, user agent and country split the count of exactly the span
   they report with fixed weights (largest remainder method), so the parts sum to that count.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.standin.insights.fixture import Api, Application, Environment, Organization
from proxy.standin.insights.timerange import DAY, HOUR, MINUTE


@dataclass(frozen=True)
class Outcome:
    """The result of a request, as Insights classifies it."""

    code: str
    # "success", "proxy" for an error returned by the gateway, or "target" for an error returned by the backend.
    kind: str
    # Error category of a proxy error: AUTH, THROTTLED, TARGET_CONNECTIVITY or OTHER.
    category: str | None
    reason: str
    # Share of the API's errors that end with this outcome.
    error_share: float


SUCCESS = Outcome("200", "success", None, "OK", 0.0)
UNAUTHENTICATED = Outcome("401", "proxy", "AUTH", "Invalid Credentials", 0.05)
PROXY_OUTCOMES = (
    Outcome("403", "proxy", "AUTH", "Resource forbidden", 0.04),
    Outcome("429", "proxy", "THROTTLED", "Message throttled out", 0.10),
    Outcome("503", "proxy", "TARGET_CONNECTIVITY", "Upstream connection failed", 0.04),
    Outcome("504", "proxy", "TARGET_CONNECTIVITY", "Upstream connection timeout", 0.05),
    Outcome("404", "proxy", "OTHER", "No matching resource found for the request", 0.08),
    Outcome("500", "proxy", "OTHER", "Unclassified gateway error", 0.02),
)
TARGET_OUTCOMES = (
    Outcome("400", "target", None, "Bad Request", 0.25),
    Outcome("404", "target", None, "Not Found", 0.22),
    Outcome("500", "target", None, "Internal Server Error", 0.12),
    Outcome("503", "target", None, "Service Unavailable", 0.03),
)
ERROR_CATEGORIES = ("AUTH", "TARGET_CONNECTIVITY", "THROTTLED", "OTHER")

# Latency channels, in the field order of the GraphQL Latency type.
LATENCY_FIELDS = (
    "response",
    "backend",
    "requestMediation",
    "responseMediation",
    "responseMedian",
    "backendMedian",
    "requestMediationMedian",
    "responseMediationMedian",
)

TRAFFIC_SURGE = "TRAFFIC_SURGE"
THROTTLING = "THROTTLING"
BACKEND_OUTAGE = "BACKEND_OUTAGE"
LATENCY_REGRESSION = "LATENCY_REGRESSION"
_INCIDENT_KINDS = (TRAFFIC_SURGE, THROTTLING, BACKEND_OUTAGE, LATENCY_REGRESSION)
# An hour has an incident when its trigger byte is below this: 3/256, about one hour in 85.
_INCIDENT_THRESHOLD = 3
# Error multipliers per outcome code and kind during incidents.
_INCIDENT_ERROR_BOOST = {
    THROTTLING: {("proxy", "429"): 12.0},
    BACKEND_OUTAGE: {("proxy", "503"): 15.0, ("proxy", "504"): 10.0, ("target", "503"): 10.0},
}
# Share of successful requests that are cacheable reads, for APIs with response caching.
_CACHEABLE_SHARE = 0.6
# Gateway time (ms) that the response latency adds to the three phases.
_GATEWAY_OVERHEAD_MS = 1.5

# Byte positions in an hour's digest.
_B_VOLUME, _B_INCIDENT, _B_KIND, _B_MINUTE, _B_SEVERITY = 0, 2, 3, 4, 5
_B_ERROR_RATE, _B_BACKEND, _B_REQUEST, _B_RESPONSE, _B_MEDIAN, _B_CACHE = 6, 7, 8, 9, 10, 11
_B_LEAVES = 12

# Per-leaf multiplier drawn from one byte: 0.7 to 1.3.
_LEAF_NOISE = tuple(0.7 + 0.6 * value / 255 for value in range(256))
# Volume by UTC hour of day: 0.3 at 02:00 up to 1.0 at 14:00.
_DAILY_CURVE = tuple(0.3 + 0.7 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 2) / 24)) for hour in range(24))
# Volume by weekday, Monday first.
_WEEKLY_CURVE = (1.0, 1.0, 1.0, 1.0, 0.95, 0.6, 0.5)
# 1970-01-01 was a Thursday.
_EPOCH_WEEKDAY = 3


def expected_hourly_requests(api: Api, environment: Environment, hour_start: int) -> float:
    """Return the request volume of an hour before noise and incidents."""
    hour_of_day = (hour_start % DAY) // HOUR
    weekday = (hour_start // DAY + _EPOCH_WEEKDAY) % 7
    return api.peak_hourly_requests * environment.traffic_scale * _DAILY_CURVE[hour_of_day] * _WEEKLY_CURVE[weekday]


def hash_bytes(*parts: object, length: int = 64) -> bytes:
    """Return ``length`` pseudo-random bytes determined by ``parts`` alone (BLAKE2b blocks)."""
    key = "|".join(str(part) for part in parts).encode()
    blocks = []
    for counter in range(-(-length // 64)):
        blocks.append(hashlib.blake2b(key, digest_size=64, salt=counter.to_bytes(16, "big")).digest())
    return b"".join(blocks)[:length]


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by the largest remainder method.

    The parts always sum to ``total``; ties go to the earlier weight.
    """
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    quotas = [total * weight / weight_sum for weight in weights]
    parts = [math.floor(quota) for quota in quotas]
    remainder = total - sum(parts)
    by_fraction = sorted(range(len(weights)), key=lambda index: (-(quotas[index] - parts[index]), index))
    for index in by_fraction[:remainder]:
        parts[index] += 1
    return parts


@dataclass(frozen=True)
class Leaf:
    """One (application, outcome) pair whose requests are counted separately."""

    application: Application | None
    outcome: Outcome


class LeafLayout:
    """The order of an API's count channels: its leaves, then cache hits and cache misses.

    Leaves are grouped by kind, so success, proxy errors and target errors are contiguous slices.
    """

    def __init__(self, organization: Organization, api: Api) -> None:
        applications = []
        shares = []
        for subscription in api.subscriptions:
            application = organization.find_application(subscription.application_id)
            assert application is not None  # Organization.__post_init__ checks every subscription
            applications.append(application)
            shares.append(subscription.share)
        share_sum = sum(shares) or 1.0
        shares = [share / share_sum for share in shares]

        leaves = [Leaf(application, SUCCESS) for application in applications]
        success_weights = list(shares)
        error_weights = [0.0] * len(applications)
        leaves.append(Leaf(None, UNAUTHENTICATED))
        success_weights.append(0.0)
        error_weights.append(UNAUTHENTICATED.error_share)
        for outcome in PROXY_OUTCOMES + TARGET_OUTCOMES:
            for application, share in zip(applications, shares):
                leaves.append(Leaf(application, outcome))
                success_weights.append(0.0)
                error_weights.append(share * outcome.error_share)

        count = len(applications)
        self.api = api
        self.applications = tuple(applications)
        self.leaves = tuple(leaves)
        self.success_weights = tuple(success_weights)
        self.error_weights = tuple(error_weights)
        self.leaf_count = len(leaves)
        self.success = slice(0, count)
        self.proxy_errors = slice(count, count + 1 + count * len(PROXY_OUTCOMES))
        self.target_errors = slice(self.proxy_errors.stop, self.leaf_count)
        self.errors = slice(count, self.leaf_count)
        self.traffic = slice(0, self.leaf_count)
        self.cache_hits = self.leaf_count
        self.cache_misses = self.leaf_count + 1
        self.channel_count = self.leaf_count + 2

    def boosted_error_weights(self, incident_kind: str) -> tuple[float, ...]:
        boosts = _INCIDENT_ERROR_BOOST.get(incident_kind)
        if not boosts:
            return self.error_weights
        return tuple(
            weight * boosts.get((leaf.outcome.kind, leaf.outcome.code), 1.0)
            for weight, leaf in zip(self.error_weights, self.leaves)
        )


@dataclass(frozen=True)
class Incident:
    """An anomaly in one hour of one (environment, API) that raises an alert."""

    kind: str
    # Unix seconds at which the alert fired, inside the incident's hour.
    fired_at: int
    # 0 to 255; alerts map it to LOW, MEDIUM or HIGH.
    severity_byte: int
    requests: int
    response_latency_ms: float


@dataclass(frozen=True)
class HourSample:
    """The numbers of one (environment, API, hour)."""

    counts: tuple[int, ...]
    latency: tuple[float, ...]
    requests: int
    incident: Incident | None
    # Each latency channel multiplied by the hour's requests, ready to sum over hours.
    weighted_latency: tuple[float, ...]
    # Cache of MinuteTotals: requests of a channel group in the hour's first minutes.
    minute_sums: dict[tuple[Sequence[int], int], int] = field(default_factory=dict, compare=False, repr=False)


class Totals:
    """Counts and request-weighted latency sums of one (environment, API) over a span of time.

    Both sequences may be shared with the model's caches, so they must never be modified.
    """

    __slots__ = ("_counts", "_weighted_latency")

    def __init__(self, counts: Sequence[int], weighted_latency: Sequence[float]) -> None:
        self._counts = counts
        self._weighted_latency = weighted_latency

    @property
    def counts(self) -> Sequence[int]:
        return self._counts

    @property
    def weighted_latency(self) -> Sequence[float]:
        return self._weighted_latency

    def total(self, part: slice) -> int:
        return sum(self.counts[part])

    def pick(self, indices: Sequence[int]) -> int:
        counts = self.counts
        return sum(counts[index] for index in indices)


class MinuteTotals(Totals):
    """Totals of minutes ``[first, stop)`` of one hour, computed only for the requested channels.

    A 1m series over a day requests 60 small spans of each hour. Spreading all channels for each
    span would dominate the query, so sums of the first ``m`` minutes are computed per channel
    group and cached on the hour's sample, where neighbouring buckets reuse them.
    """

    __slots__ = ("_sample", "_first", "_stop", "_leaf_count")

    def __init__(self, sample: HourSample, first: int, stop: int, leaf_count: int) -> None:
        super().__init__((), ())
        self._sample = sample
        self._first = first
        self._stop = stop
        self._leaf_count = leaf_count

    @property
    def counts(self) -> Sequence[int]:
        if not self._counts:
            self._counts = [count * self._stop // 60 - count * self._first // 60 for count in self._sample.counts]
        return self._counts

    @property
    def weighted_latency(self) -> Sequence[float]:
        if not self._weighted_latency:
            requests = self.total(slice(0, self._leaf_count))
            self._weighted_latency = [value * requests for value in self._sample.latency]
        return self._weighted_latency

    def total(self, part: slice) -> int:
        indices = range(*part.indices(len(self._sample.counts)))
        return self._sum_before(indices, self._stop) - self._sum_before(indices, self._first)

    def pick(self, indices: Sequence[int]) -> int:
        return self._sum_before(indices, self._stop) - self._sum_before(indices, self._first)

    def _sum_before(self, indices: Sequence[int], minute: int) -> int:
        """Return the requests of ``indices`` in the hour's first ``minute`` minutes."""
        key = (indices, minute)
        cache = self._sample.minute_sums
        value = cache.get(key)
        if value is None:
            counts = self._sample.counts
            value = cache[key] = sum(counts[index] * minute // 60 for index in indices)
        return value


class TrafficModel:
    """The deterministic traffic of one organization, with caches of generated days."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self.layouts = {api.id: LeafLayout(organization, api) for api in organization.apis}
        self._environments = {environment.id: environment for environment in organization.environments}
        # About 25 KB per entry: enough days for a 30-day dashboard over every API and environment.
        self._day_samples = functools.lru_cache(maxsize=512)(self._generate_day)
        # About 1 KB per entry; they make long ranges cheap once their days were generated.
        self._day_totals = functools.lru_cache(maxsize=16384)(self._sum_day)

    def empty_totals(self, api: Api) -> Totals:
        return Totals([0] * self.layouts[api.id].channel_count, [0.0] * len(LATENCY_FIELDS))

    def hour(self, environment: Environment, api: Api, hour_start: int) -> HourSample:
        day_start = hour_start - hour_start % DAY
        return self._day_samples(environment.id, api.id, day_start)[(hour_start - day_start) // HOUR]

    def span(self, environment: Environment, api: Api, start: int, end: int) -> Totals:
        """Sum the channels of ``[start, end)``; both bounds are whole minutes in Unix seconds."""
        start = max(start, self.organization.data_start)
        leaf_count = self.layouts[api.id].leaf_count
        hour_start = start - start % HOUR
        if start < end <= hour_start + HOUR and (start, end) != (hour_start, hour_start + HOUR):
            sample = self.hour(environment, api, hour_start)
            return MinuteTotals(sample, (start - hour_start) // MINUTE, (end - hour_start) // MINUTE, leaf_count)

        # Whole days come from the day totals, whole hours from the samples, and the minutes of a
        # partial hour from its even spread. The chunks are summed once at the end.
        count_chunks: list[Sequence[int]] = []
        latency_chunks: list[Sequence[float]] = []
        instant = start
        while instant < end:
            if instant % DAY == 0 and instant + DAY <= end:
                counts, weighted_latency = self._day_totals(environment.id, api.id, instant)
                instant += DAY
            else:
                hour_start = instant - instant % HOUR
                hour_end = min(hour_start + HOUR, end)
                sample = self.hour(environment, api, hour_start)
                if instant == hour_start and hour_end == hour_start + HOUR:
                    counts, weighted_latency = sample.counts, sample.weighted_latency
                else:
                    first = (instant - hour_start) // MINUTE
                    stop = (hour_end - hour_start) // MINUTE
                    counts, weighted_latency = _spread_minutes(sample, first, stop, leaf_count)
                instant = hour_end
            count_chunks.append(counts)
            latency_chunks.append(weighted_latency)

        if not count_chunks:
            return self.empty_totals(api)
        if len(count_chunks) == 1:
            return Totals(count_chunks[0], latency_chunks[0])
        return Totals(list(map(sum, zip(*count_chunks))), list(map(sum, zip(*latency_chunks))))

    def _sum_day(self, environment_id: str, api_id: str, day_start: int) -> tuple[list[int], list[float]]:
        samples = self._day_samples(environment_id, api_id, day_start)
        counts = list(map(sum, zip(*(sample.counts for sample in samples))))
        weighted_latency = list(map(sum, zip(*(sample.weighted_latency for sample in samples))))
        return counts, weighted_latency

    def _generate_day(self, environment_id: str, api_id: str, day_start: int) -> tuple[HourSample, ...]:
        environment = self._environments[environment_id]
        layout = self.layouts[api_id]
        return tuple(
            self._generate_hour(environment, layout, day_start + hour * HOUR) for hour in range(24)
        )

    def _generate_hour(self, environment: Environment, layout: LeafLayout, hour_start: int) -> HourSample:
        api = layout.api
        if hour_start < self.organization.data_start:
            zeros = (0.0,) * len(LATENCY_FIELDS)
            return HourSample((0,) * layout.channel_count, zeros, 0, None, zeros)
        # Two bytes per leaf: one scales its count, one rounds it (so small counts are not biased to 0).
        noise = hash_bytes(self.organization.uuid, environment.id, api.id, hour_start, length=_B_LEAVES + 2 * layout.leaf_count)

        incident_kind = None
        if noise[_B_INCIDENT] < _INCIDENT_THRESHOLD:
            incident_kind = _INCIDENT_KINDS[noise[_B_KIND] % len(_INCIDENT_KINDS)]

        volume_noise = int.from_bytes(noise[_B_VOLUME : _B_VOLUME + 2], "big") / 65535
        volume = expected_hourly_requests(api, environment, hour_start) * (0.85 + 0.3 * volume_noise)
        if incident_kind in (TRAFFIC_SURGE, THROTTLING):
            volume *= 2.0 + noise[_B_SEVERITY] / 255

        error_rate = api.error_rate * (0.6 + 0.8 * noise[_B_ERROR_RATE] / 255)
        success_volume = volume * (1.0 - error_rate)
        error_volume = volume * error_rate
        error_weights = layout.boosted_error_weights(incident_kind) if incident_kind else layout.error_weights
        scale_bytes = noise[_B_LEAVES : _B_LEAVES + layout.leaf_count]
        rounding_bytes = noise[_B_LEAVES + layout.leaf_count :]
        leaf_counts = [
            int((success_weight * success_volume + error_weight * error_volume) * _LEAF_NOISE[scale] + rounding / 256)
            for success_weight, error_weight, scale, rounding in zip(
                layout.success_weights, error_weights, scale_bytes, rounding_bytes
            )
        ]
        requests = sum(leaf_counts)

        cache_hits = cache_misses = 0
        if api.cache_hit_ratio is not None:
            lookups = int(sum(leaf_counts[layout.success]) * _CACHEABLE_SHARE)
            hit_ratio = min(1.0, api.cache_hit_ratio * (0.85 + 0.3 * noise[_B_CACHE] / 255))
            cache_hits = int(lookups * hit_ratio)
            cache_misses = lookups - cache_hits

        latency = self._latency(api, noise, incident_kind)
        incident = None
        if incident_kind is not None:
            incident = Incident(
                kind=incident_kind,
                fired_at=hour_start + (noise[_B_MINUTE] % 60) * MINUTE,
                severity_byte=noise[_B_SEVERITY],
                requests=requests,
                response_latency_ms=latency[0],
            )
        weighted_latency = tuple(value * requests for value in latency)
        return HourSample(tuple(leaf_counts) + (cache_hits, cache_misses), latency, requests, incident, weighted_latency)

    @staticmethod
    def _latency(api: Api, noise: bytes, incident_kind: str | None) -> tuple[float, ...]:
        backend = api.backend_latency_ms * (0.8 + 0.4 * noise[_B_BACKEND] / 255)
        if incident_kind == BACKEND_OUTAGE:
            backend *= 2.5
        elif incident_kind == LATENCY_REGRESSION:
            backend *= 3.0 + noise[_B_SEVERITY] / 128
        request_mediation = 3.0 + 9.0 * noise[_B_REQUEST] / 255
        response_mediation = 2.0 + 6.0 * noise[_B_RESPONSE] / 255
        response = backend + request_mediation + response_mediation + _GATEWAY_OVERHEAD_MS
        median_ratio = 0.42 + 0.2 * noise[_B_MEDIAN] / 255
        return (
            response,
            backend,
            request_mediation,
            response_mediation,
            response * median_ratio,
            backend * median_ratio,
            request_mediation * median_ratio,
            response_mediation * median_ratio,
        )


def _spread_minutes(sample: HourSample, first: int, stop: int, leaf_count: int) -> tuple[list[int], list[float]]:
    """Return the channels of minutes ``[first, stop)`` of an hour whose requests are spread evenly."""
    counts = [count * stop // 60 - count * first // 60 for count in sample.counts]
    requests = sum(counts[:leaf_count])
    return counts, [value * requests for value in sample.latency]


@functools.lru_cache(maxsize=8)
def traffic_model(organization: Organization) -> TrafficModel:
    """Return the process-wide model of ``organization``, so its caches outlive single requests."""
    return TrafficModel(organization)
