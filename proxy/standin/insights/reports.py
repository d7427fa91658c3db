"""Resolvers of the custom reports: getCustomReportOvertime, getCustomReportTopOvertime and
getGroupByValues.

``groupByValues`` filter ``groupByFields`` by position: the n-th value fixes the n-th field, and a
missing, null or empty value leaves its field open. getCustomReportTopOvertime groups by the last
field and reports the groups with the largest totals.

Fields of the API (name, version, creator, destination) and of a request's leaf (application
name and owner, target response code) select requests exactly. Resource template and method,
user agent and platform select a fixed share of each API's requests, the same shares that
getResourceUsage, getTopUserAgents and getTopPlatforms use, so counts are rounded per bucket.
Requests without a value for a grouped field are left out of its groups. Unauthenticated
requests have no application, and errors returned by the gateway have no target response code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.standin.insights.arguments import InvalidArgumentError
from proxy.standin.insights.breakdowns import PLATFORM_WEIGHTS, USER_AGENT_WEIGHTS, api_weights
from proxy.standin.insights.context import QueryContext
from proxy.standin.insights.fixture import Api, Environment
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import TimeRange, Granularity, format_timestamp, parse_time_filter, resolve_granularity
from proxy.standin.insights.traffic import LATENCY_FIELDS, Leaf

# NOTE: the real number of groups in a top report is not published; ten is an invented choice.
TOP_GROUPS = 10

_API_FIELDS = ("API_NAME", "API_VERSION", "API_CREATOR", "DESTINATION")
_LEAF_FIELDS = ("APPLICATION_NAME", "APPLICATION_OWNER", "TARGET_RESPONSE_CODE")
_RESOURCE_FIELDS = ("API_RESOURCE_TEMPLATE", "API_METHOD")
_SHARE_TABLES = {"USER_AGENT": ("user-agent", USER_AGENT_WEIGHTS), "PLATFORM": ("platform", PLATFORM_WEIGHTS)}

_COUNT_METRICS = ("HIT_COUNT", "API_ERRORS", "TARGET_ERRORS", "RESPONSE_CACHE_HIT")
_LATENCY_METRICS = {
    "TOTAL_LATENCY": LATENCY_FIELDS.index("response"),
    "BACKEND_LATENCY": LATENCY_FIELDS.index("backend"),
    "REQUEST_MEDIATION_LATENCY": LATENCY_FIELDS.index("requestMediation"),
    "RESPONSE_MEDIATION_LATENCY": LATENCY_FIELDS.index("responseMediation"),
}


def api_field_value(field: str, api: Api, environment: Environment) -> str:
    values = {"API_NAME": api.name, "API_VERSION": api.version, "API_CREATOR": api.provider}
    return values[field] if field in values else api.backend_url(environment)


def leaf_field_value(field: str, leaf: Leaf) -> str | None:
    """Return a leaf's value of an application or response-code field; None when it has none."""
    if field == "TARGET_RESPONSE_CODE":
        return None if leaf.outcome.kind == "proxy" else leaf.outcome.code
    if leaf.application is None:
        return None
    return leaf.application.name if field == "APPLICATION_NAME" else leaf.application.owner


def resource_field_value(field: str, template: str, method: str) -> str:
    return template if field == "API_RESOURCE_TEMPLATE" else method


@dataclass(frozen=True)
class PairSelection:
    """The leaf indices and the share of their requests that a group selects of one (environment, API)."""

    environment: Environment
    api: Api
    leaves: tuple[int, ...]
    success_leaves: tuple[int, ...]
    share: float


def select_pair(context: QueryContext, environment: Environment, api: Api, group: Mapping[str, str]) -> PairSelection | None:
    """Apply a group's field values to one (environment, API); None when nothing matches."""
    for field in _API_FIELDS:
        if field in group and api_field_value(field, api, environment) != group[field]:
            return None
    layout = context.model.layouts[api.id]
    leaves = tuple(
        index
        for index, leaf in enumerate(layout.leaves)
        if all(leaf_field_value(field, leaf) == group[field] for field in _LEAF_FIELDS if field in group)
    )
    success_leaves = tuple(index for index in leaves if layout.leaves[index].outcome.kind == "success")

    share = 1.0
    resource_total = sum(resource.weight for resource in api.resources)
    matching_resources = sum(
        resource.weight
        for resource in api.resources
        if all(
            resource_field_value(field, resource.template, resource.method) == group[field]
            for field in _RESOURCE_FIELDS
            if field in group
        )
    )
    share *= matching_resources / resource_total if resource_total else 0.0
    for field, (dimension, table) in _SHARE_TABLES.items():
        if field in group:
            weights = api_weights(dimension, api, table)
            share *= sum(weight for (name, _), weight in zip(table, weights) if name == group[field]) / sum(weights)
    if not leaves or share <= 0:
        return None
    return PairSelection(environment, api, leaves, success_leaves, share)


def _pair_value(context: QueryContext, selection: PairSelection, metric: str, start: int, end: int) -> tuple[float, float]:
    """Return (requests, value) of a selection in ``[start, end)``; latency values are request-weighted sums."""
    layout = context.model.layouts[selection.api.id]
    totals = context.span(selection.environment, selection.api, start, end)
    requests = totals.pick(selection.leaves) * selection.share
    if metric == "HIT_COUNT":
        return requests, requests
    if metric in ("API_ERRORS", "TARGET_ERRORS"):
        kind = "proxy" if metric == "API_ERRORS" else "target"
        errors = sum(totals.counts[index] for index in selection.leaves if layout.leaves[index].outcome.kind == kind)
        return requests, errors * selection.share
    if metric == "RESPONSE_CACHE_HIT":
        all_success = totals.total(layout.success)
        if not all_success:
            return requests, 0.0
        return requests, totals.counts[layout.cache_hits] * totals.pick(selection.success_leaves) / all_success * selection.share
    pair_requests = totals.total(layout.traffic)
    if not pair_requests:
        return requests, 0.0
    return requests, totals.weighted_latency[_LATENCY_METRICS[metric]] / pair_requests * requests


def group_series(
    context: QueryContext,
    selections: Sequence[PairSelection],
    metric: str,
    time_range: TimeRange,
    granularity: Granularity,
) -> list[dict[str, Any]]:
    """Compute a group's metric per bucket; buckets where the group had no requests are left out."""
    usage = []
    if not selections:
        return usage
    for bucket in context.buckets(time_range, granularity):
        requests = value = 0.0
        for selection in selections:
            pair_requests, pair_value = _pair_value(context, selection, metric, bucket.span_start, bucket.span_end)
            requests += pair_requests
            value += pair_value
        if requests <= 0:
            continue
        if metric in _LATENCY_METRICS:
            value /= requests
        usage.append({"timeSpan": format_timestamp(bucket.start, time_range.offset), "value": round(value)})
    return usage


def parse_group(group_by_fields: Sequence[str | None], group_by_values: Sequence[str | None]) -> dict[str, str]:
    """Pair fields with values by position; a missing, null or empty value leaves its field open."""
    if len(group_by_values) > len(group_by_fields):
        raise InvalidArgumentError(
            f"groupByValues has {len(group_by_values)} values but groupByFields has {len(group_by_fields)} fields; "
            "give at most one value per field"
        )
    return {field: value for field, value in zip(group_by_fields, group_by_values) if field and value}


def _selections(context: QueryContext, data_filter: Mapping[str, Any], group: Mapping[str, str]) -> list[PairSelection]:
    selections = []
    for environment, api in context.scope(data_filter).pairs():
        selection = select_pair(context, environment, api, group)
        if selection is not None:
            selections.append(selection)
    return selections


@resolver("getCustomReportOvertime")
def get_custom_report_overtime(
    context: QueryContext,
    dataFilter: Mapping[str, Any],
    timeFilter: Mapping[str, Any],
    metric: str,
    groupByFields: Sequence[str | None],
    groupByValues: Sequence[str | None],
    granularity: str,
) -> dict[str, Any]:
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(granularity, time_range, "granularity")
    group = parse_group(groupByFields, groupByValues)
    usage = group_series(context, _selections(context, dataFilter, group), metric, time_range, resolved)
    return {"usage": usage, "granularity": resolved.name}


@resolver("getCustomReportTopOvertime")
def get_custom_report_top_overtime(
    context: QueryContext,
    dataFilter: Mapping[str, Any],
    timeFilter: Mapping[str, Any],
    metric: str,
    groupByFields: Sequence[str | None],
    groupByValues: Sequence[str | None],
    granularity: str,
) -> dict[str, Any]:
    fields = [field for field in groupByFields if field]
    if not fields:
        raise InvalidArgumentError("groupByFields is empty; name at least one field to group by")
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(granularity, time_range, "granularity")
    group = parse_group(groupByFields, groupByValues)
    group_field = fields[-1]

    candidates = sorted({row[-1] for row in distinct_values(context, dataFilter, fields, group)})
    ranked = []
    for candidate in candidates:
        selections = _selections(context, dataFilter, {**group, group_field: candidate})
        usage = group_series(context, selections, metric, time_range, resolved)
        if usage:
            ranked.append((sum(point["value"] for point in usage), candidate, usage))
    ranked.sort(key=lambda row: (-row[0], row[1]))
    return {
        "usage": [{"groupByValue": candidate, "usage": usage} for _, candidate, usage in ranked[:TOP_GROUPS]],
        "granularity": resolved.name,
    }


def distinct_values(
    context: QueryContext, data_filter: Mapping[str, Any], fields: Sequence[str], group: Mapping[str, str]
) -> set[tuple[str, ...]]:
    """Return the distinct combinations of ``fields`` that requests in scope can have and that match ``group``."""
    requested = set(fields)
    leaf_fields = [field for field in _LEAF_FIELDS if field in requested]
    resource_fields = [field for field in _RESOURCE_FIELDS if field in requested]
    # A share dimension is expanded only when requested, to keep the product small.
    share_fields = [field for field in _SHARE_TABLES if field in requested]
    share_rows = list(itertools.product(*([name for name, _ in _SHARE_TABLES[field][1]] for field in share_fields)))

    combinations: set[tuple[str, ...]] = set()
    for environment, api in context.scope(data_filter).pairs():
        layout = context.model.layouts[api.id]
        api_values = {field: api_field_value(field, api, environment) for field in _API_FIELDS if field in requested}
        leaf_rows = {tuple(leaf_field_value(field, leaf) for field in leaf_fields) for leaf in layout.leaves}
        resource_rows = {
            tuple(resource_field_value(field, resource.template, resource.method) for field in resource_fields)
            for resource in api.resources
        }
        for leaf_row, resource_row, share_row in itertools.product(leaf_rows, resource_rows, share_rows):
            values = {
                **api_values,
                **dict(zip(leaf_fields, leaf_row)),
                **dict(zip(resource_fields, resource_row)),
                **dict(zip(share_fields, share_row)),
            }
            row = tuple(values[field] for field in fields)
            if None not in row and all(values[field] == value for field, value in group.items()):
                combinations.add(row)
    return combinations


@resolver("getGroupByValues")
def get_group_by_values(
    context: QueryContext, dataFilter: Mapping[str, Any], groupByFields: Sequence[str | None], groupByValues: Sequence[str | None]
) -> list[list[str]]:
    fields = [field for field in groupByFields if field]
    if not fields:
        raise InvalidArgumentError("groupByFields is empty; name at least one field to list values for")
    group = parse_group(groupByFields, groupByValues)
    return [list(row) for row in sorted(distinct_values(context, dataFilter, fields, group))]
