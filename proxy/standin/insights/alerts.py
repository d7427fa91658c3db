"""Resolvers of the alert queries.

Each incident of the traffic model raises one alert at a minute inside its hour: traffic surges
and throttling raise TRAFFIC alerts on TOTAL_TRAFFIC, backend outages and latency regressions
raise LATENCY alerts on RESPONSE_LATENCY. Alerts are kept for one week, as in Choreo, so only
alerts fired in the seven days before the injected clock's ``now`` are reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.standin.insights.arguments import (
    Search,
    check_choice,
    check_id_lists,
    id_set,
    parse_pagination,
    parse_search_filter,
)
from proxy.standin.insights.context import QueryContext, Scope
from proxy.standin.insights.fixture import Api, Environment
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import HOUR, WEEK, TimeRange, format_timestamp, parse_time_filter
from proxy.standin.insights.traffic import BACKEND_OUTAGE, LATENCY_REGRESSION, Incident, expected_hourly_requests

ALERT_RETENTION_SECONDS = WEEK
ALERT_CATEGORIES = ("TRAFFIC", "LATENCY")
SEVERITIES = ("LOW", "MEDIUM", "HIGH")
ALERT_SORT_COLUMNS = ("timestamp", "severity", "category", "apiId")
# Typical gateway time added to the backend latency: mean mediation times plus overhead, in ms.
_TYPICAL_GATEWAY_MS = 14.0


@dataclass(frozen=True)
class Alert:
    api: Api
    environment: Environment
    fired_at: int
    category: str
    metric: str
    severity: str
    message: str


def _alert_from_incident(api: Api, environment: Environment, hour_start: int, incident: Incident) -> Alert:
    label = f"{api.name} {api.version} in {environment.name}"
    if incident.kind in (BACKEND_OUTAGE, LATENCY_REGRESSION):
        usual = api.backend_latency_ms + _TYPICAL_GATEWAY_MS
        latency = incident.response_latency_ms
        category, metric = "LATENCY", "RESPONSE_LATENCY"
        message = f"Response latency (p95) of {label} reached {latency:.0f} ms, {latency / usual:.1f} times the usual {usual:.0f} ms"
    else:
        expected = max(1.0, expected_hourly_requests(api, environment, hour_start))
        category, metric = "TRAFFIC", "TOTAL_TRAFFIC"
        message = (
            f"Traffic to {label} reached {incident.requests} requests in an hour, "
            f"{incident.requests / expected:.1f} times the expected {expected:.0f}"
        )
    if incident.kind == BACKEND_OUTAGE:
        severity = "HIGH"
    else:
        severity = SEVERITIES[min(incident.severity_byte * len(SEVERITIES) // 256, len(SEVERITIES) - 1)]
    return Alert(api, environment, incident.fired_at, category, metric, severity, message)


def kept_alerts(context: QueryContext, scope: Scope, time_range: TimeRange) -> Iterator[Alert]:
    """Yield the alerts fired in the requested range and in the week before ``now``."""
    start, end = context.clip(time_range.start, time_range.end)
    start = max(start, int(context.now) - ALERT_RETENTION_SECONDS)
    if start >= end:
        return
    for environment, api in scope.pairs():
        for hour_start in range(start - start % HOUR, end, HOUR):
            incident = context.model.hour(environment, api, hour_start).incident
            if incident is not None and start <= incident.fired_at < end:
                yield _alert_from_incident(api, environment, hour_start, incident)


@resolver("getAlertSummary")
def get_alert_summary(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    alertSummaryFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(alertSummaryFilter, "alertSummaryFilter")
    alert_filter = alertSummaryFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    page = parse_pagination(
        alert_filter.get("paginationFilter"),
        "alertSummaryFilter.paginationFilter",
        sort_columns=ALERT_SORT_COLUMNS,
        default_sort_by="timestamp",
    )
    search = parse_search_filter(alert_filter.get("searchFilter"), "alertSummaryFilter.searchFilter")
    category = check_choice(alert_filter.get("category"), ALERT_CATEGORIES, "alertSummaryFilter.category")
    scope = context.scope(dataFilter, id_set(alert_filter.get("apiIds")))

    alerts = [
        alert
        for alert in kept_alerts(context, scope, time_range)
        if (category is None or alert.category == category)
        and (search is None or _matches_search(alert, search))
    ]
    sort_keys = {
        "timestamp": lambda alert: alert.fired_at,
        "severity": lambda alert: SEVERITIES.index(alert.severity),
        "category": lambda alert: alert.category,
        "apiId": lambda alert: alert.api.id,
    }
    page_alerts = page.apply(alerts, sort_keys, lambda alert: (alert.fired_at, alert.api.id, alert.environment.id))
    usage = [
        {
            "apiId": alert.api.id,
            "timestamp": format_timestamp(alert.fired_at, time_range.offset),
            "category": alert.category,
            "metric": alert.metric,
            "severity": alert.severity,
            "message": alert.message,
        }
        for alert in page_alerts
    ]
    return {"usage": usage, "pagination": page.as_result(len(alerts))}


def _matches_search(alert: Alert, search: Search) -> bool:
    if search.api_ids is not None and alert.api.id not in search.api_ids:
        return False
    return search.matches(alert.message, alert.api.name)


@resolver("getTopAPIsByAlertCount")
def get_top_apis_by_alert_count(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    topAPIsByAlertCountFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(topAPIsByAlertCountFilter, "topAPIsByAlertCountFilter")
    top_filter = topAPIsByAlertCountFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    # Count-ranked, so always descending whatever the request's sortOrder is.
    page = parse_pagination(
        top_filter.get("paginationFilter"),
        "topAPIsByAlertCountFilter.paginationFilter",
        sort_columns=("count",),
        default_sort_by="count",
        force_order="desc",
    )
    search = parse_search_filter(top_filter.get("searchFilter"), "topAPIsByAlertCountFilter.searchFilter")
    scope = context.scope(dataFilter)
    counts: dict[str, int] = {}
    for alert in kept_alerts(context, scope, time_range):
        if search is None or _matches_search(alert, search):
            counts[alert.api.id] = counts.get(alert.api.id, 0) + 1
    rows = [{"apiId": api_id, "count": count} for api_id, count in counts.items()]
    page_rows = page.apply(rows, {"count": lambda row: row["count"]}, lambda row: row["apiId"])
    return {"usage": page_rows, "pagination": page.as_result(len(rows))}
