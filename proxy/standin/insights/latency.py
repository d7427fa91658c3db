"""Resolvers of the latency queries.

Values are in ms. A span's latency is the request-weighted mean of the hourly p95 (or median)
values of the selected APIs and environments. A span without requests has latency 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.standin.insights import context as measures
from proxy.standin.insights.arguments import InvalidArgumentError
from proxy.standin.insights.context import QueryContext
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import default_range, parse_time_filter, resolve_granularity
from proxy.standin.insights.traffic import LATENCY_FIELDS

_RESPONSE = LATENCY_FIELDS.index("response")
_CHANNEL_MEASURES = [measures.weighted_latency(channel) for channel in range(len(LATENCY_FIELDS))]


def _response_latency(context: QueryContext, pairs: list, start: int, end: int) -> float:
    requests = context.total(pairs, start, end, measures.traffic)
    return measures.mean(context.total(pairs, start, end, _CHANNEL_MEASURES[_RESPONSE]), requests)


@resolver("getOverallLatency")
def get_overall_latency(context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any]) -> float:
    time_range = parse_time_filter(filter, "filter")
    pairs = context.scope(dataFilter).pairs()
    return round(_response_latency(context, pairs, time_range.start, time_range.end), 2)


@resolver("getOverallLatencyByAPI")
def get_overall_latency_by_api(
    context: QueryContext, dataFilter: Mapping[str, Any], apiId: str, filter: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    # The time filter is optional here; without one the last seven days are measured.
    time_range = parse_time_filter(filter, "filter") if filter is not None else default_range(context.now)
    pairs = context.scope(dataFilter, [apiId]).pairs()
    return {"response": round(_response_latency(context, pairs, time_range.start, time_range.end), 2)}


@resolver("getLatencySummary")
def get_latency_summary(
    context: QueryContext,
    filter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    latencySummaryFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    summary_filter = latencySummaryFilter or {}
    time_range = parse_time_filter(filter, "filter")
    resolved = resolve_granularity(summary_filter.get("granularity"), time_range, "latencySummaryFilter.granularity")
    api_id = summary_filter.get("apiId")
    pairs = context.scope(dataFilter, None if api_id is None else [api_id]).pairs()
    rows = context.series(pairs, time_range, resolved, [measures.traffic, _CHANNEL_MEASURES[_RESPONSE]])
    summary = [{"timeSpan": span, "latencyTime": round(weighted / requests, 2)} for span, (requests, weighted) in rows]
    return {"summary": summary, "granularity": resolved.name}


@resolver("getLatency")
def get_latency(
    context: QueryContext, timeFilter: Mapping[str, Any], latencyFilter: Mapping[str, Any], dataFilter: Mapping[str, Any]
) -> dict[str, Any]:
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(latencyFilter.get("granularity"), time_range, "latencyFilter.granularity")
    pairs = context.scope(dataFilter, [latencyFilter["apiId"]]).pairs()
    rows = context.series(pairs, time_range, resolved, [measures.traffic, *_CHANNEL_MEASURES])
    summary = []
    for span, (requests, *weighted) in rows:
        row: dict[str, Any] = {"timeSpan": span}
        for name, value in zip(LATENCY_FIELDS, weighted):
            row[name] = round(value / requests)
        summary.append(row)
    return {"summary": summary, "granularity": resolved.name}


@resolver("topSlowestAPIs")
def top_slowest_apis(context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    if limit < 0:
        raise InvalidArgumentError(f"limit is {limit}; give 0 or a positive number of APIs")
    time_range = parse_time_filter(filter, "filter")
    scope = context.scope(dataFilter)
    ranked = []
    for api in scope.apis:
        pairs = scope.with_apis([api]).pairs()
        if context.total(pairs, time_range.start, time_range.end, measures.traffic) > 0:
            latency = round(_response_latency(context, pairs, time_range.start, time_range.end))
            ranked.append({"apiId": api.id, "latency": latency})
    ranked.sort(key=lambda row: (-row["latency"], row["apiId"]))
    return ranked[:limit]
