"""Per-request state of the resolvers: data filters, the data window, spans and series.

Data visibility: a DataFilter selects data only when its ``orgId`` is the organization's UUID and
its ``tenant`` is the organization's tenant. ``environmentId`` and ``environmentIds`` may name an
environment by its id or by any of its aliases. Each environment counts once, however many of its
ids are given. When neither is given, every environment of the organization is included. A
``projectId`` keeps the APIs of that project. Unknown ids select nothing, so queries return
empty lists and zero totals instead of errors.

The data window ends at the start of the current minute of the injected clock, so a range that
reaches into the future counts only what has happened so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.standin.insights.fixture import Api, Environment, Organization
from proxy.standin.insights.timerange import MINUTE, Granularity, TimeRange, bucket_starts, format_timestamp
from proxy.standin.insights.traffic import Leaf, LeafLayout, Totals, TrafficModel

Measure = Callable[[LeafLayout, Totals], float]


@dataclass(frozen=True)
class Scope:
    """The environments and APIs that a query reads."""

    environments: tuple[Environment, ...] = ()
    apis: tuple[Api, ...] = ()

    def pairs(self) -> list[tuple[Environment, Api]]:
        return [(environment, api) for api in self.apis for environment in self.environments]

    def with_apis(self, apis: Iterable[Api]) -> Scope:
        return Scope(self.environments, tuple(apis))


@dataclass(frozen=True)
class Bucket:
    start: int
    # The part of the bucket inside both the requested range and the data window.
    span_start: int
    span_end: int


@dataclass
class QueryContext:
    """The organization, its traffic model and the clock reading of one GraphQL request."""

    organization: Organization
    model: TrafficModel
    now: float
    _spans: dict[tuple[str, str, int, int], Totals] = field(default_factory=dict)

    @property
    def data_end(self) -> int:
        return math.floor(self.now / MINUTE) * MINUTE

    def matches_organization(self, org_id: str | None, tenant: str | None = None) -> bool:
        if org_id != self.organization.uuid:
            return False
        return tenant is None or tenant == self.organization.tenant

    def environments_for(self, env_ids: Sequence[str | None] | None) -> tuple[Environment, ...]:
        """Resolve ids and aliases to environments; None or an empty list means every environment."""
        requested = [env_id for env_id in env_ids or () if env_id is not None]
        if not requested:
            return self.organization.environments
        found = {self.organization.find_environment(env_id) for env_id in requested}
        return tuple(environment for environment in self.organization.environments if environment in found)

    def scope(self, data_filter: Mapping[str, Any], api_ids: Iterable[str] | None = None) -> Scope:
        """Resolve a DataFilter, optionally narrowed to ``api_ids``, to the environments and APIs it selects."""
        if not self.matches_organization(data_filter.get("orgId"), data_filter.get("tenant")):
            return Scope()
        env_ids = []
        if data_filter.get("environmentId") is not None:
            env_ids.append(data_filter["environmentId"])
        env_ids.extend(data_filter.get("environmentIds") or ())
        environments = self.environments_for(env_ids)
        if not environments:
            return Scope()
        apis = self.organization.apis
        project_id = data_filter.get("projectId")
        if project_id is not None:
            apis = tuple(api for api in apis if api.project_id == project_id)
        if api_ids is not None:
            wanted = set(api_ids)
            apis = tuple(api for api in apis if api.id in wanted)
        return Scope(environments, apis)

    def clip(self, start: int, end: int) -> tuple[int, int]:
        """Clip ``[start, end)`` to the data window: from the first recorded minute up to now."""
        return max(start, self.organization.data_start), min(end, self.data_end)

    def span(self, environment: Environment, api: Api, start: int, end: int) -> Totals:
        """Return the totals of ``[start, end)``, memoized for the rest of the request."""
        start, end = self.clip(start, end)
        if start >= end:
            return self.model.empty_totals(api)
        key = (environment.id, api.id, start, end)
        totals = self._spans.get(key)
        if totals is None:
            totals = self._spans[key] = self.model.span(environment, api, start, end)
        return totals

    def buckets(self, time_range: TimeRange, granularity: Granularity) -> list[Bucket]:
        """List the buckets that overlap both the requested range and the data window."""
        start, end = self.clip(time_range.start, time_range.end)
        return [
            Bucket(bucket_start, max(bucket_start, start), min(bucket_start + granularity.seconds, end))
            for bucket_start in bucket_starts(start, end, granularity)
        ]

    def total(self, pairs: Iterable[tuple[Environment, Api]], start: int, end: int, measure: Measure) -> float:
        return sum(measure(self.model.layouts[api.id], self.span(environment, api, start, end)) for environment, api in pairs)

    def series(
        self,
        pairs: Sequence[tuple[Environment, Api]],
        time_range: TimeRange,
        granularity: Granularity,
        measures: Sequence[Measure],
    ) -> list[tuple[str, list[float]]]:
        """Sum ``measures`` over ``pairs`` per bucket, labelled by the rendered bucket start.

        Only buckets where the first measure is positive are listed: a series has rows where the
        selection recorded requests, as a group-by over request events would.
        """
        if not pairs:
            return []
        rows = []
        for bucket in self.buckets(time_range, granularity):
            values = [0.0] * len(measures)
            for environment, api in pairs:
                layout = self.model.layouts[api.id]
                totals = self.span(environment, api, bucket.span_start, bucket.span_end)
                for index, measure in enumerate(measures):
                    values[index] += measure(layout, totals)
            if values[0] > 0:
                rows.append((format_timestamp(bucket.start, time_range.offset), values))
        return rows


def traffic(layout: LeafLayout, totals: Totals) -> int:
    return totals.total(layout.traffic)


def success(layout: LeafLayout, totals: Totals) -> int:
    return totals.total(layout.success)


def errors(layout: LeafLayout, totals: Totals) -> int:
    return totals.total(layout.errors)


def proxy_errors(layout: LeafLayout, totals: Totals) -> int:
    return totals.total(layout.proxy_errors)


def target_errors(layout: LeafLayout, totals: Totals) -> int:
    return totals.total(layout.target_errors)


def cache_hits(layout: LeafLayout, totals: Totals) -> int:
    return totals.counts[layout.cache_hits]


def cache_misses(layout: LeafLayout, totals: Totals) -> int:
    return totals.counts[layout.cache_misses]


def weighted_latency(channel: int) -> Measure:
    """Measure the request-weighted sum of a latency channel; divide it by the traffic for a mean."""

    def measure(layout: LeafLayout, totals: Totals) -> float:
        return totals.weighted_latency[channel]

    return measure


def leaves_where(predicate: Callable[[Leaf], bool]) -> Measure:
    """Measure the requests of the leaves that satisfy ``predicate``, with indices cached per API."""
    indices: dict[str, tuple[int, ...]] = {}

    def measure(layout: LeafLayout, totals: Totals) -> int:
        selected = indices.get(layout.api.id)
        if selected is None:
            selected = indices[layout.api.id] = tuple(
                index for index, leaf in enumerate(layout.leaves) if predicate(leaf)
            )
        return totals.pick(selected)

    return measure


def of_applications(application_ids: frozenset[str] | None, base: Callable[[Leaf], bool] | None = None) -> Measure:
    """Measure the requests of the given applications (all traffic when None) that pass ``base``."""
    if application_ids is None and base is None:
        return traffic

    def predicate(leaf: Leaf) -> bool:
        if application_ids is not None and (leaf.application is None or leaf.application.id not in application_ids):
            return False
        return base is None or base(leaf)

    return leaves_where(predicate)


def mean(weighted_sum: float, weight: float) -> float:
    return weighted_sum / weight if weight else 0.0
