"""Resolvers that split traffic by a dimension the leaves do not carry: resource, platform, user
agent and country.

Each API splits the requests of the whole range by fixed weights with the largest remainder
method, so the parts of an API sum exactly to its requests in that range. The weights are the
API's resource weights, or a table below perturbed per API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.standin.insights import context as measures
from proxy.standin.insights.arguments import check_id_lists, id_set, parse_pagination, parse_search_filter
from proxy.standin.insights.context import QueryContext, Scope
from proxy.standin.insights.fixture import Api
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import parse_time_filter
from proxy.standin.insights.traffic import apportion, hash_bytes

# getTopPlatforms and getTopUserAgents list this many values and fold the rest into "Other".
TOP_DEVICE_VALUES = 9
OTHER = "Other"

PLATFORM_WEIGHTS = (
    ("Android", 0.28),
    ("iOS", 0.22),
    ("Windows", 0.18),
    ("macOS", 0.11),
    ("Linux", 0.08),
    ("iPadOS", 0.04),
    ("Unknown", 0.03),
    ("Chrome OS", 0.025),
    ("Tizen", 0.005),
    ("KaiOS", 0.004),
    ("FreeBSD", 0.003),
    ("BlackBerry OS", 0.002),
)
USER_AGENT_WEIGHTS = (
    ("Chrome", 0.24),
    ("Mobile Safari", 0.17),
    ("okhttp", 0.12),
    ("Safari", 0.08),
    ("Edge", 0.07),
    ("CFNetwork", 0.06),
    ("Firefox", 0.05),
    ("Apache-HttpClient", 0.04),
    ("curl", 0.03),
    ("python-requests", 0.03),
    ("PostmanRuntime", 0.02),
    ("Go-http-client", 0.02),
    ("Java", 0.01),
)
COUNTRY_WEIGHTS = (
    ("United States", 0.30),
    ("India", 0.16),
    ("United Kingdom", 0.09),
    ("Germany", 0.08),
    ("Sri Lanka", 0.06),
    ("Brazil", 0.05),
    ("Japan", 0.05),
    ("Australia", 0.04),
    ("Canada", 0.04),
    ("France", 0.03),
    ("Singapore", 0.03),
    ("Netherlands", 0.02),
)

RESOURCE_SORT_COLUMNS = ("count", "apiId", "apiResourceTemplate", "apiMethod")


def api_weights(dimension: str, api: Api, table: Sequence[tuple[str, float]]) -> list[float]:
    """Return the table's weights scaled by 0.5 to 1.5 per (dimension, API), so APIs differ."""
    noise = hash_bytes(dimension, api.id, length=len(table))
    return [weight * (0.5 + byte / 255) for (_, weight), byte in zip(table, noise)]


def split_traffic(
    context: QueryContext, scope: Scope, start: int, end: int, dimension: str, table: Sequence[tuple[str, float]]
) -> dict[str, int]:
    """Split each API's requests in ``[start, end)`` over the table's values and sum per value."""
    counts = dict.fromkeys((name for name, _ in table), 0)
    for api in scope.apis:
        requests = int(context.total(scope.with_apis([api]).pairs(), start, end, measures.traffic))
        for (name, _), part in zip(table, apportion(requests, api_weights(dimension, api, table))):
            counts[name] += part
    return counts


def top_values(counts: Mapping[str, int], key: str) -> list[dict[str, Any]]:
    """Return the nine largest counts and an "Other" row with the rest, largest first."""
    ranked = sorted(((name, count) for name, count in counts.items() if count > 0), key=lambda row: (-row[1], row[0]))
    rows = [{key: name, "count": count} for name, count in ranked[:TOP_DEVICE_VALUES]]
    rest = ranked[TOP_DEVICE_VALUES:]
    if rest:
        rows.append({key: OTHER, "count": sum(count for _, count in rest)})
    return rows


def _device_scope(context: QueryContext, dataFilter: Mapping[str, Any], deviceFilter: Mapping[str, Any] | None) -> Scope:
    check_id_lists(deviceFilter, "deviceFilter")
    return context.scope(dataFilter, id_set((deviceFilter or {}).get("apiIds")))


@resolver("getTopPlatforms")
def get_top_platforms(
    context: QueryContext, timeFilter: Mapping[str, Any], dataFilter: Mapping[str, Any], deviceFilter: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    scope = _device_scope(context, dataFilter, deviceFilter)
    time_range = parse_time_filter(timeFilter, "timeFilter")
    counts = split_traffic(context, scope, time_range.start, time_range.end, "platform", PLATFORM_WEIGHTS)
    return top_values(counts, "platform")


@resolver("getTopUserAgents")
def get_top_user_agents(
    context: QueryContext, timeFilter: Mapping[str, Any], dataFilter: Mapping[str, Any], deviceFilter: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    scope = _device_scope(context, dataFilter, deviceFilter)
    time_range = parse_time_filter(timeFilter, "timeFilter")
    counts = split_traffic(context, scope, time_range.start, time_range.end, "user-agent", USER_AGENT_WEIGHTS)
    return top_values(counts, "userAgent")


@resolver("getAPIUsageByGeoLocation")
def get_api_usage_by_geo_location(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    geoLocationFilter: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    check_id_lists(geoLocationFilter, "geoLocationFilter")
    time_range = parse_time_filter(timeFilter, "timeFilter")
    scope = context.scope(dataFilter, id_set((geoLocationFilter or {}).get("apiIds")))
    # Choreo records client locations only for on-prem environments (documented), so Choreo-hosted
    # environments contribute nothing.
    on_prem = Scope(tuple(env for env in scope.environments if env.type == "ON_PREM"), scope.apis)
    counts = split_traffic(context, on_prem, time_range.start, time_range.end, "country", COUNTRY_WEIGHTS)
    ranked = sorted(((name, count) for name, count in counts.items() if count > 0), key=lambda row: (-row[1], row[0]))
    return [{"country": name, "count": count} for name, count in ranked]


@resolver("getResourceUsage")
def get_resource_usage(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    resourceUsageFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(resourceUsageFilter, "resourceUsageFilter")
    usage_filter = resourceUsageFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    page = parse_pagination(
        usage_filter.get("paginationFilter"),
        "resourceUsageFilter.paginationFilter",
        sort_columns=RESOURCE_SORT_COLUMNS,
        default_sort_by="count",
    )
    search = parse_search_filter(usage_filter.get("searchFilter"), "resourceUsageFilter.searchFilter")
    api_ids = id_set(usage_filter.get("apiIds"))
    if search is not None and search.api_ids is not None:
        api_ids = search.api_ids if api_ids is None else api_ids & search.api_ids
    scope = context.scope(dataFilter, api_ids)
    # NOTE: trafficType is accepted and ignored; "ALL" is the only value seen from real clients.
    measure = measures.of_applications(id_set(usage_filter.get("appIds")))

    rows = []
    for api in scope.apis:
        requests = int(context.total(scope.with_apis([api]).pairs(), time_range.start, time_range.end, measure))
        parts = apportion(requests, [resource.weight for resource in api.resources])
        for resource, count in zip(api.resources, parts):
            if count and (search is None or search.matches(resource.template, resource.method)):
                rows.append({"apiId": api.id, "apiResourceTemplate": resource.template, "apiMethod": resource.method, "count": count})

    sort_keys = {column: (lambda row, column=column: row[column]) for column in RESOURCE_SORT_COLUMNS}
    page_rows = page.apply(rows, sort_keys, lambda row: (row["apiId"], row["apiResourceTemplate"], row["apiMethod"]))
    return {"usage": page_rows, "pagination": page.as_result(len(rows))}
