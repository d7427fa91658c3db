"""Resolvers of the traffic queries: totals, success and error summaries, usage over time per API,
application and backend, cache statistics and usage by application."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proxy.standin.insights import context as measures
from proxy.standin.insights.arguments import check_id_lists, id_set
from proxy.standin.insights.context import QueryContext, Scope
from proxy.standin.insights.fixture import Api, Application, Environment
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import default_range, parse_time_filter, resolve_granularity
from proxy.standin.insights.traffic import Leaf, LeafLayout, Totals


@resolver("getTotalTraffic")
def get_total_traffic(context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any]) -> int:
    time_range = parse_time_filter(filter, "filter")
    pairs = context.scope(dataFilter).pairs()
    return int(context.total(pairs, time_range.start, time_range.end, measures.traffic))


@resolver("getTotalErrors")
def get_total_errors(context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any]) -> int:
    time_range = parse_time_filter(filter, "filter")
    pairs = context.scope(dataFilter).pairs()
    return int(context.total(pairs, time_range.start, time_range.end, measures.errors))


@resolver("getTotalTrafficByAPI")
def get_total_traffic_by_api(
    context: QueryContext, dataFilter: Mapping[str, Any], apiId: str, filter: Mapping[str, Any] | None = None
) -> int:
    # The time filter is optional here; without one the last seven days are counted.
    time_range = parse_time_filter(filter, "filter") if filter is not None else default_range(context.now)
    pairs = context.scope(dataFilter, [apiId]).pairs()
    return int(context.total(pairs, time_range.start, time_range.end, measures.traffic))


@resolver("getSuccessSummary")
def get_success_summary(
    context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any], granularity: str | None = None
) -> dict[str, Any]:
    time_range = parse_time_filter(filter, "filter")
    resolved = resolve_granularity(granularity, time_range, "granularity")
    rows = context.series(context.scope(dataFilter).pairs(), time_range, resolved, [measures.traffic, measures.success])
    summary = [{"timeSpan": time_span, "requestCount": int(values[1])} for time_span, values in rows]
    return {"summary": summary, "granularity": resolved.name}


@resolver("getErrorSummary")
def get_error_summary(
    context: QueryContext, filter: Mapping[str, Any], dataFilter: Mapping[str, Any], granularity: str | None = None
) -> dict[str, Any]:
    time_range = parse_time_filter(filter, "filter")
    resolved = resolve_granularity(granularity, time_range, "granularity")
    rows = context.series(context.scope(dataFilter).pairs(), time_range, resolved, [measures.traffic, measures.errors])
    summary = [{"timeSpan": time_span, "errorCount": int(values[1])} for time_span, values in rows]
    return {"summary": summary, "granularity": resolved.name}


def _selected_apis(context: QueryContext, usage_filter: Mapping[str, Any]) -> set[str] | None:
    """Return the API ids chosen by apiIds and the observed apiIdVersionPairs, or None for all APIs."""
    api_ids = id_set(usage_filter.get("apiIds"))
    version_pairs = [pair for pair in usage_filter.get("apiIdVersionPairs") or () if pair is not None]
    if api_ids is None and not version_pairs:
        return None
    selected = set(api_ids or ())
    for pair in version_pairs:
        api = context.organization.find_api(pair["id"])
        # A pair whose version differs selects nothing; an unknown id stays in the set and matches nothing.
        if api is None or pair.get("version") in (None, api.version):
            selected.add(pair["id"])
    return selected


@resolver("getAPIUsageOverTime")
def get_api_usage_over_time(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    apiUsageOvertimeFilter: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    check_id_lists(apiUsageOvertimeFilter, "apiUsageOvertimeFilter")
    usage_filter = apiUsageOvertimeFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(usage_filter.get("granularity"), time_range, "apiUsageOvertimeFilter.granularity")
    # NOTE: trafficType is accepted and ignored; "ALL" is the only value seen from real clients.
    scope = context.scope(dataFilter, _selected_apis(context, usage_filter))
    measure = measures.of_applications(id_set(usage_filter.get("appIds")))
    results = []
    for api in scope.apis:
        rows = context.series(scope.with_apis([api]).pairs(), time_range, resolved, [measure])
        if rows:
            usage = [{"timeSpan": time_span, "count": int(values[0])} for time_span, values in rows]
            results.append({"apiId": api.id, "usage": usage, "granularity": resolved.name})
    return results


@resolver("getAPIUsageByAppOverTime")
def get_api_usage_by_app_over_time(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    apiUsageOvertimeFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(apiUsageOvertimeFilter, "apiUsageOvertimeFilter")
    usage_filter = apiUsageOvertimeFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(usage_filter.get("granularity"), time_range, "apiUsageOvertimeFilter.granularity")
    scope = context.scope(dataFilter, _selected_apis(context, usage_filter))
    app_ids = id_set(usage_filter.get("appIds"))
    usage = []
    for application in context.organization.applications:
        if app_ids is not None and application.id not in app_ids:
            continue
        rows = context.series(scope.pairs(), time_range, resolved, [measures.of_applications(frozenset({application.id}))])
        if rows:
            usage.append(
                {
                    "applicationId": application.id,
                    "applicationName": application.name,
                    "applicationOwner": application.owner,
                    "usage": [{"timeSpan": time_span, "count": int(values[0])} for time_span, values in rows],
                }
            )
    return {"usage": usage, "granularity": resolved.name}


def _reached_backend(layout: LeafLayout, totals: Totals) -> int:
    # Requests that the gateway forwarded: successes plus errors returned by the backend.
    return totals.total(layout.success) + totals.total(layout.target_errors)


@resolver("getAPIUsageByBackendOverTime")
def get_api_usage_by_backend_over_time(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    apiUsageByBackendOverTimeFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(apiUsageByBackendOverTimeFilter, "apiUsageByBackendOverTimeFilter")
    backend_filter = apiUsageByBackendOverTimeFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(
        backend_filter.get("granularity"), time_range, "apiUsageByBackendOverTimeFilter.granularity"
    )
    scope = context.scope(dataFilter, id_set(backend_filter.get("apiIds")))
    pairs_by_backend: dict[str, list[tuple[Environment, Api]]] = {}
    for environment, api in scope.pairs():
        pairs_by_backend.setdefault(api.backend_url(environment), []).append((environment, api))
    usage = []
    for backend in sorted(pairs_by_backend):
        rows = context.series(pairs_by_backend[backend], time_range, resolved, [_reached_backend])
        if rows:
            usage.append({"backend": backend, "usage": [{"timeSpan": span, "count": int(values[0])} for span, values in rows]})
    return {"usage": usage, "granularity": resolved.name}


@resolver("getCacheHitsAndMisses")
def get_cache_hits_and_misses(
    context: QueryContext, timeFilter: Mapping[str, Any], dataFilter: Mapping[str, Any], cacheFilter: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    cache_filter = cacheFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(cache_filter.get("granularity"), time_range, "cacheFilter.granularity")
    api_id = cache_filter.get("apiId")
    scope = context.scope(dataFilter, None if api_id is None else [api_id])
    cached = scope.with_apis(api for api in scope.apis if api.cache_hit_ratio is not None)

    def lookups(layout: LeafLayout, totals: Totals) -> int:
        return measures.cache_hits(layout, totals) + measures.cache_misses(layout, totals)

    rows = context.series(cached.pairs(), time_range, resolved, [lookups, measures.cache_hits, measures.cache_misses])
    summary = [
        {
            "timeSpan": time_span,
            "hits": int(hits),
            "misses": int(misses),
            "hitPercentage": round(100.0 * hits / total, 2),
        }
        for time_span, (total, hits, misses) in rows
    ]
    return {"summary": summary, "granularity": resolved.name}


def _usage_by_application(
    context: QueryContext,
    scope: Scope,
    start: int,
    end: int,
    leaf_filter: Callable[[Leaf], bool] | None,
    app_ids: frozenset[str] | None,
) -> list[tuple[Api, Application, int]]:
    """Count requests per (API, application) in ``[start, end)``; rows with a zero count are left out."""
    rows = []
    for api in scope.apis:
        layout = context.model.layouts[api.id]
        for application in layout.applications:
            if app_ids is not None and application.id not in app_ids:
                continue
            measure = measures.of_applications(frozenset({application.id}), leaf_filter)
            count = int(context.total(scope.with_apis([api]).pairs(), start, end, measure))
            if count:
                rows.append((api, application, count))
    return rows


@resolver("getAPIsUsageByApplications")
def get_apis_usage_by_applications(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    apiUsageByAppFilter: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    check_id_lists(apiUsageByAppFilter, "apiUsageByAppFilter")
    usage_filter = apiUsageByAppFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    scope = context.scope(dataFilter, id_set(usage_filter.get("apiIds")))
    app_ids = id_set(usage_filter.get("appIds"))
    subscribers = id_set(usage_filter.get("subscribers"))
    rows = _usage_by_application(context, scope, time_range.start, time_range.end, None, app_ids)
    return [
        {
            "apiId": api.id,
            "applicationId": application.id,
            "applicationName": application.name,
            "applicationOwner": application.owner,
            "count": count,
        }
        for api, application, count in rows
        if subscribers is None or application.owner in subscribers
    ]


def _success_usage(context: QueryContext, timeFilter: Mapping[str, Any], usage_filter: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    check_id_lists(usage_filter, "successAPIUsageByAppFilter")
    usage_filter = usage_filter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    organization = context.organization
    tenants = id_set(usage_filter.get("tenantDomains"))
    if tenants is not None and organization.tenant not in tenants:
        return []
    data_filter = {"orgId": organization.uuid, "tenant": organization.tenant}
    scope = context.scope(data_filter, id_set(usage_filter.get("apiIds")))
    rows = _usage_by_application(
        context, scope, time_range.start, time_range.end, lambda leaf: leaf.outcome.kind == "success", None
    )
    return [
        {
            "apiId": api.id,
            "apiName": api.name,
            "apiVersion": api.version,
            "apiCreatorTenantDomain": organization.tenant,
            "applicationId": application.id,
            "applicationName": application.name,
            "applicationOwner": application.owner,
            "count": count,
        }
        for api, application, count in rows
    ]


@resolver("getSuccessAPIsUsageByApplications")
def get_success_apis_usage_by_applications(
    context: QueryContext, timeFilter: Mapping[str, Any], successAPIUsageByAppFilter: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    # The real API identifies the organization by the on-prem key sent as the bearer token. The
    # stand-in's GraphQL layer never receives the token, so it reports its only organization.
    return _success_usage(context, timeFilter, successAPIUsageByAppFilter)


@resolver("getSuccessAPIsUsageByApplicationsWithOnPremKey")
def get_success_apis_usage_by_applications_with_on_prem_key(
    context: QueryContext,
    onPremKey: str,
    timeFilter: Mapping[str, Any],
    successAPIUsageByAppFilter: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    # An unknown key identifies no organization, so it gets no data rather than an error. The
    # documented rejection of projectId with an on-prem key cannot occur here, because neither
    # on-prem query takes a DataFilter.
    if onPremKey != context.organization.on_prem_key:
        return []
    return _success_usage(context, timeFilter, successAPIUsageByAppFilter)
