"""Resolvers of the error queries.

Proxy errors are returned by the gateway and have a category (AUTH, TARGET_CONNECTIVITY,
THROTTLED, OTHER). Target errors are 4xx and 5xx responses of the backend. Queries about categories
and error reasons (getErrorsByCategory, getErrorsDetails, getTotalErrorsByAPI) count proxy errors
only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.standin.insights import context as measures
from proxy.standin.insights.arguments import check_choice, check_id_lists, parse_pagination, parse_search_filter
from proxy.standin.insights.context import Measure, QueryContext
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import default_range, format_timestamp, parse_time_filter, resolve_granularity
from proxy.standin.insights.traffic import ERROR_CATEGORIES, Leaf

# Result field of ErrorCountByCategory per error category.
_CATEGORY_FIELDS = {"AUTH": "auth", "TARGET_CONNECTIVITY": "targetConnectivity", "THROTTLED": "throttled", "OTHER": "other"}


def _outcome_measure(kind: str, code_class: str | None = None, category: str | None = None) -> Measure:
    def predicate(leaf: Leaf) -> bool:
        outcome = leaf.outcome
        if outcome.kind != kind:
            return False
        if code_class is not None and not outcome.code.startswith(code_class):
            return False
        return category is None or outcome.category == category

    return measures.leaves_where(predicate)


_CATEGORY_MEASURES = {category: _outcome_measure("proxy", category=category) for category in ERROR_CATEGORIES}
_STATUS_CLASS_MEASURES = [
    _outcome_measure("proxy", "4"),
    _outcome_measure("proxy", "5"),
    _outcome_measure("target", "4"),
    _outcome_measure("target", "5"),
]

ERRORS_DETAILS_SORT_COLUMNS = ("timeSpan", "count", "apiId", "applicationName", "reason")
STATUS_CODE_SORT_COLUMNS = ("apiId", "count")


def _api_ids(api_id: str | None) -> list[str] | None:
    return None if api_id is None else [api_id]


@resolver("getErrorsByCategory")
def get_errors_by_category(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    errorsByCategoryFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    category_filter = errorsByCategoryFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(category_filter.get("granularity"), time_range, "errorsByCategoryFilter.granularity")
    requested = [
        check_choice(category, ERROR_CATEGORIES, "errorsByCategoryFilter.categories")
        for category in category_filter.get("categories") or ()
        if category is not None
    ]
    # An empty list selects every category, as real clients send categories: [].
    categories = [category for category in ERROR_CATEGORIES if not requested or category in requested]
    pairs = context.scope(dataFilter, _api_ids(category_filter.get("apiId"))).pairs()
    rows = context.series(pairs, time_range, resolved, [measures.traffic, *(_CATEGORY_MEASURES[c] for c in categories)])
    errors = []
    for span, (_, *counts) in rows:
        row: dict[str, Any] = {"timeSpan": span, **dict.fromkeys(_CATEGORY_FIELDS.values())}
        for category, count in zip(categories, counts):
            row[_CATEGORY_FIELDS[category]] = int(count)
        errors.append(row)
    return {"errors": errors, "granularity": resolved.name}


@resolver("getErrorsDetails")
def get_errors_details(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    errorsDetailsFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    check_id_lists(errorsDetailsFilter, "errorsDetailsFilter")
    details_filter = errorsDetailsFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(details_filter.get("granularity"), time_range, "errorsDetailsFilter.granularity")
    category = check_choice(details_filter.get("category"), ERROR_CATEGORIES, "errorsDetailsFilter.category")
    page = parse_pagination(
        details_filter.get("paginationFilter"),
        "errorsDetailsFilter.paginationFilter",
        sort_columns=ERRORS_DETAILS_SORT_COLUMNS,
        default_sort_by="timeSpan",
    )
    search = parse_search_filter(details_filter.get("searchFilter"), "errorsDetailsFilter.searchFilter")
    app_id = details_filter.get("appId")
    scope = context.scope(dataFilter, _api_ids(details_filter.get("apiId")))
    buckets = context.buckets(time_range, resolved)

    # Rows are tuples (bucket start, API id, leaf, count) until the page is cut, to keep long ranges cheap.
    rows = []
    for api in scope.apis:
        if search is not None and search.api_ids is not None and api.id not in search.api_ids:
            continue
        layout = context.model.layouts[api.id]
        selected = [
            (index, leaf)
            for index, leaf in enumerate(layout.leaves)
            if leaf.outcome.kind == "proxy"
            and (category is None or leaf.outcome.category == category)
            and (app_id is None or (leaf.application is not None and leaf.application.id == app_id))
            and (search is None or search.matches(leaf.outcome.reason, leaf.application and leaf.application.name))
        ]
        for bucket in buckets:
            spans = [context.span(env, api, bucket.span_start, bucket.span_end) for env in scope.environments]
            for index, leaf in selected:
                count = sum(totals.counts[index] for totals in spans)
                if count:
                    rows.append((bucket.start, api.id, leaf, count))

    sort_keys = {
        "timeSpan": lambda row: row[0],
        "count": lambda row: row[3],
        "apiId": lambda row: row[1],
        "applicationName": lambda row: row[2].application.name if row[2].application else "",
        "reason": lambda row: row[2].outcome.reason,
    }

    def tie_key(row: tuple[int, str, Leaf, int]) -> tuple[int, str, str, str]:
        application_id = row[2].application.id if row[2].application else ""
        return row[0], row[1], application_id, row[2].outcome.code

    usage = []
    for bucket_start, api_id, leaf, count in page.apply(rows, sort_keys, tie_key):
        application = leaf.application
        usage.append(
            {
                "apiId": api_id,
                "timeSpan": format_timestamp(bucket_start, time_range.offset),
                "applicationId": application.id if application else None,
                "applicationName": application.name if application else None,
                "applicationOwner": application.owner if application else None,
                "reason": leaf.outcome.reason,
                "count": count,
            }
        )
    return {"usage": usage, "pagination": page.as_result(len(rows))}


@resolver("getProxyTargetErrorsOverTime")
def get_proxy_target_errors_over_time(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
    errorsByStatusCodeFilter: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    status_filter = errorsByStatusCodeFilter or {}
    time_range = parse_time_filter(timeFilter, "timeFilter")
    resolved = resolve_granularity(status_filter.get("granularity"), time_range, "errorsByStatusCodeFilter.granularity")
    pairs = context.scope(dataFilter, _api_ids(status_filter.get("apiId"))).pairs()
    rows = context.series(pairs, time_range, resolved, [measures.traffic, *_STATUS_CLASS_MEASURES])
    return [
        {
            "timeSpan": span,
            "proxy": {"_4xx": int(proxy_4xx), "_5xx": int(proxy_5xx), "total": int(proxy_4xx + proxy_5xx)},
            "target": {"_4xx": int(target_4xx), "_5xx": int(target_5xx), "total": int(target_4xx + target_5xx)},
        }
        for span, (_, proxy_4xx, proxy_5xx, target_4xx, target_5xx) in rows
    ]


@resolver("getErrorsByStatusCode")
def get_errors_by_status_code(
    context: QueryContext,
    timeFilter: Mapping[str, Any],
    errorCountByStatusCodeFilter: Mapping[str, Any],
    dataFilter: Mapping[str, Any],
) -> dict[str, Any]:
    status_filter = errorCountByStatusCodeFilter
    time_range = parse_time_filter(timeFilter, "timeFilter")
    page = parse_pagination(
        status_filter.get("paginationFilter"),
        "errorCountByStatusCodeFilter.paginationFilter",
        sort_columns=STATUS_CODE_SORT_COLUMNS,
        default_sort_by="apiId",
    )
    kind = status_filter["errorType"].lower()
    code_type = status_filter.get("errorCodeType")
    code_class = None if code_type is None else code_type[1]
    scope = context.scope(dataFilter, _api_ids(status_filter.get("apiId")))

    rows = []
    for api in scope.apis:
        layout = context.model.layouts[api.id]
        spans = [context.span(env, api, time_range.start, time_range.end) for env in scope.environments]
        by_code: dict[str, int] = {}
        for index, leaf in enumerate(layout.leaves):
            outcome = leaf.outcome
            if outcome.kind == kind and (code_class is None or outcome.code.startswith(code_class)):
                by_code[outcome.code] = by_code.get(outcome.code, 0) + sum(totals.counts[index] for totals in spans)
        codes = [{"statusCode": code, "count": count} for code, count in sorted(by_code.items()) if count]
        if codes:
            rows.append({"apiId": api.id, "errorCountByCode": codes, "_total": sum(code["count"] for code in codes)})

    sort_keys = {"apiId": lambda row: row["apiId"], "count": lambda row: row["_total"]}
    page_rows = page.apply(rows, sort_keys, lambda row: row["apiId"])
    errors = [{"apiId": row["apiId"], "errorCountByCode": row["errorCountByCode"]} for row in page_rows]
    return {"errors": errors, "pagination": page.as_result(len(rows))}


@resolver("getTotalErrorsByAPI")
def get_total_errors_by_api(
    context: QueryContext, dataFilter: Mapping[str, Any], apiId: str, filter: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    # The time filter is optional here; without one the last seven days are counted.
    time_range = parse_time_filter(filter, "filter") if filter is not None else default_range(context.now)
    pairs = context.scope(dataFilter, [apiId]).pairs()
    return {"proxy": int(context.total(pairs, time_range.start, time_range.end, measures.proxy_errors))}
