"""Tests of the stand-in's Insights GraphQL layer: every query field, data consistency, time
handling, documented rejections and the shapes of request, parse and validation errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from proxy.standin.insights import FIXTURE_ORG, InsightsService
from proxy.standin.insights.fixture import Environment
from proxy.standin.insights.schema import insights_schema

# 2025-06-18T12:00:00Z, a Wednesday.
NOW = 1_750_248_000.0
ORG = FIXTURE_ORG.uuid
DEVELOPMENT, PRODUCTION = FIXTURE_ORG.environments
ORDERS, PAYMENTS, PROFILE, INVENTORY, SHIPPING, HELLO = (api.id for api in FIXTURE_ORG.apis)
WEB_APP = FIXTURE_ORG.applications[0].id

# The seven days before NOW, written in the documentation's style with a +05:30 offset.
WEEK = {"from": "2025-06-11T17:30:00.000+05:30", "to": "2025-06-18T17:30:00.000+05:30"}
ALL_ENVIRONMENTS = {"orgId": ORG, "tenant": "carbon.super"}
PRODUCTION_ONLY = {"orgId": ORG, "tenant": "carbon.super", "environmentId": PRODUCTION.id}
SAMPLE_QUERY = "query ($org: OrgFilter!) {listEnvironments(org: $org){id name}}"
TIME_SPAN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}[+-]\d{2}:\d{2}$")
PAGINATION = "pagination{total limit offset sortBy sortOrder}"


@pytest.fixture
def service() -> InsightsService:
    return InsightsService(clock=lambda: NOW)


async def run(service: InsightsService, query: str, **variables: Any) -> tuple[int, dict[str, Any]]:
    return await service.execute({"query": query, "variables": variables})


async def data_of(service: InsightsService, query: str, **variables: Any) -> dict[str, Any]:
    """Execute a query that must succeed and return its data."""
    status, body = await run(service, query, **variables)
    assert status == 200
    assert "errors" not in body, body.get("errors")
    return body["data"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def window(start: datetime, end: datetime) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat()}


# One realistic query per Query field: (query, variables, whether the data may be empty).
FIELD_QUERIES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "listAllAPI": (
        "query($d: DataFilter!){listAllAPI(dataFilter: $d){id name version provider displayName}}",
        {"d": PRODUCTION_ONLY},
        False,
    ),
    "listApplications": (
        "query($d: DataFilter!, $a: [String]){listApplications(applicationFilter: {apiIds: $a}, dataFilter: $d){id name owner}}",
        {"d": PRODUCTION_ONLY, "a": [ORDERS]},
        False,
    ),
    "listProviders": ("query($d: DataFilter!){listProviders(dataFilter: $d){name}}", {"d": PRODUCTION_ONLY}, False),
    "listSubscribers": (
        "query($d: DataFilter!, $a: [String]){listSubscribers(subscriberFilter: {apiIds: $a}, dataFilter: $d){name}}",
        {"d": PRODUCTION_ONLY, "a": [PAYMENTS]},
        False,
    ),
    "listOrganizations": ("{listOrganizations{id uuid handle name}}", {}, False),
    "listEnvironments": (
        "query($org: OrgFilter!){listEnvironments(org: $org){id externalEnvId internalEnvId sandboxEnvId name type}}",
        {"org": {"orgId": ORG}},
        False,
    ),
    "listTenants": (
        "query($o: String!){listTenants(tenantDataFilter: {orgId: $o, envId: \"prod-us-east-azure\"})}",
        {"o": ORG},
        False,
    ),
    "getTotalTraffic": (
        "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getTotalErrors": (
        "query($t: TimeFilter!, $d: DataFilter!){getTotalErrors(filter: $t, dataFilter: $d)}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getOverallLatency": (
        "query($t: TimeFilter!, $d: DataFilter!){getOverallLatency(filter: $t, dataFilter: $d)}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getLatencySummary": (
        "query($t: TimeFilter!, $d: DataFilter!, $api: String){getLatencySummary(filter: $t, "
        "latencySummaryFilter: {apiId: $api, granularity: \"1d\"}, dataFilter: $d){granularity summary{timeSpan latencyTime}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "api": ORDERS},
        False,
    ),
    "getSuccessSummary": (
        "query($t: TimeFilter!, $d: DataFilter!){getSuccessSummary(filter: $t, dataFilter: $d, granularity: \"1d\")"
        "{granularity summary{timeSpan requestCount}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getErrorSummary": (
        "query($t: TimeFilter!, $d: DataFilter!){getErrorSummary(filter: $t, dataFilter: $d){granularity summary{timeSpan errorCount}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getErrorsByCategory": (
        "query($t: TimeFilter!, $d: DataFilter!){getErrorsByCategory(timeFilter: $t, errorsByCategoryFilter: "
        "{categories: [], granularity: \"1d\"}, dataFilter: $d){granularity errors{timeSpan auth targetConnectivity throttled other}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getErrorsDetails": (
        "query($t: TimeFilter!, $d: DataFilter!){getErrorsDetails(timeFilter: $t, errorsDetailsFilter: {granularity: \"1d\", "
        "paginationFilter: {limit: 20, sortBy: \"count\", sortOrder: \"desc\"}}, dataFilter: $d)"
        "{usage{apiId timeSpan applicationId applicationName applicationOwner reason count} " + PAGINATION + "}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getProxyTargetErrorsOverTime": (
        "query($t: TimeFilter!, $d: DataFilter!){getProxyTargetErrorsOverTime(timeFilter: $t, errorsByStatusCodeFilter: "
        "{granularity: \"1d\"}, dataFilter: $d){timeSpan proxy{_4xx _5xx total} target{_4xx _5xx total}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getErrorsByStatusCode": (
        "query($t: TimeFilter!, $d: DataFilter!){getErrorsByStatusCode(timeFilter: $t, errorCountByStatusCodeFilter: "
        "{errorType: TARGET, errorCodeType: _4XX}, dataFilter: $d){errors{apiId errorCountByCode{statusCode count}} "
        + PAGINATION
        + "}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getTotalErrorsByAPI": (
        "query($t: TimeFilter, $d: DataFilter!, $api: ID!){getTotalErrorsByAPI(filter: $t, dataFilter: $d, apiId: $api){proxy}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "api": ORDERS},
        False,
    ),
    "getAPIUsageOverTime": (
        "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIUsageOverTime(timeFilter: $t, apiUsageOvertimeFilter: "
        "{apiIds: $a, granularity: \"1d\", trafficType: \"ALL\"}, dataFilter: $d){apiId granularity usage{timeSpan count}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "a": [ORDERS, PAYMENTS]},
        False,
    ),
    "getAPIUsageByAppOverTime": (
        "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIUsageByAppOverTime(timeFilter: $t, apiUsageOvertimeFilter: "
        "{apiIds: $a, granularity: \"1d\"}, dataFilter: $d){granularity usage{applicationId applicationName applicationOwner "
        "usage{timeSpan count}}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "a": [ORDERS]},
        False,
    ),
    "getAPIUsageByBackendOverTime": (
        "query($t: TimeFilter!, $d: DataFilter!){getAPIUsageByBackendOverTime(timeFilter: $t, apiUsageByBackendOverTimeFilter: "
        "{granularity: \"1d\"}, dataFilter: $d){granularity usage{backend usage{timeSpan count}}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getResourceUsage": (
        "query($t: TimeFilter!, $d: DataFilter!){getResourceUsage(timeFilter: $t, resourceUsageFilter: {paginationFilter: "
        "{limit: 20, sortBy: \"count\", sortOrder: \"desc\"}}, dataFilter: $d){usage{apiId apiResourceTemplate apiMethod count} "
        + PAGINATION
        + "}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getTotalTrafficByAPI": (
        "query($t: TimeFilter, $d: DataFilter!, $api: ID!){getTotalTrafficByAPI(filter: $t, dataFilter: $d, apiId: $api)}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "api": ORDERS},
        False,
    ),
    "topSlowestAPIs": (
        "query($t: TimeFilter!, $d: DataFilter!){topSlowestAPIs(filter: $t, dataFilter: $d, limit: 3){apiId latency}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getLatency": (
        "query($t: TimeFilter!, $d: DataFilter!, $api: String!){getLatency(timeFilter: $t, latencyFilter: {apiId: $api, "
        "granularity: \"1d\"}, dataFilter: $d){granularity summary{timeSpan response backend requestMediation responseMediation "
        "responseMedian backendMedian requestMediationMedian responseMediationMedian}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "api": PAYMENTS},
        False,
    ),
    "getOverallLatencyByAPI": (
        "query($t: TimeFilter, $d: DataFilter!, $api: ID!){getOverallLatencyByAPI(filter: $t, dataFilter: $d, apiId: $api){response}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "api": PAYMENTS},
        False,
    ),
    "getCacheHitsAndMisses": (
        "query($t: TimeFilter!, $d: DataFilter!){getCacheHitsAndMisses(timeFilter: $t, cacheFilter: {granularity: \"1d\"}, "
        "dataFilter: $d){granularity summary{timeSpan hits misses hitPercentage}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getTopPlatforms": (
        "query($t: TimeFilter!, $d: DataFilter!){getTopPlatforms(timeFilter: $t, dataFilter: $d){platform count}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getTopUserAgents": (
        "query($t: TimeFilter!, $d: DataFilter!){getTopUserAgents(timeFilter: $t, deviceFilter: {apiIds: []}, dataFilter: $d)"
        "{userAgent count}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    # Choreo records locations only for on-prem environments, and both fixture environments are Choreo ones.
    "getAPIUsageByGeoLocation": (
        "query($t: TimeFilter!, $d: DataFilter!){getAPIUsageByGeoLocation(timeFilter: $t, dataFilter: $d){country count}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        True,
    ),
    "getAPIsUsageByApplications": (
        "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIsUsageByApplications(timeFilter: $t, apiUsageByAppFilter: "
        "{apiIds: $a}, dataFilter: $d){apiId applicationId applicationName applicationOwner count}}",
        {"t": WEEK, "d": PRODUCTION_ONLY, "a": [ORDERS]},
        False,
    ),
    "getTopAPIsByAlertCount": (
        "query($t: TimeFilter!, $d: DataFilter!){getTopAPIsByAlertCount(timeFilter: $t, dataFilter: $d){usage{apiId count} "
        + PAGINATION
        + "}}",
        {"t": WEEK, "d": ALL_ENVIRONMENTS},
        False,
    ),
    "getAlertSummary": (
        "query($t: TimeFilter!, $d: DataFilter!){getAlertSummary(timeFilter: $t, alertSummaryFilter: {paginationFilter: "
        "{limit: 10}}, dataFilter: $d){usage{apiId timestamp category metric severity message} " + PAGINATION + "}}",
        {"t": WEEK, "d": ALL_ENVIRONMENTS},
        False,
    ),
    "getSuccessAPIsUsageByApplications": (
        "query($t: TimeFilter!){getSuccessAPIsUsageByApplications(timeFilter: $t, successAPIUsageByAppFilter: "
        "{tenantDomains: [\"carbon.super\"]}){apiId apiName apiVersion apiCreatorTenantDomain applicationId applicationName "
        "applicationOwner count}}",
        {"t": WEEK},
        False,
    ),
    "getSuccessAPIsUsageByApplicationsWithOnPremKey": (
        "query($k: String!, $t: TimeFilter!){getSuccessAPIsUsageByApplicationsWithOnPremKey(onPremKey: $k, timeFilter: $t)"
        "{apiId apiName apiVersion apiCreatorTenantDomain applicationId applicationName applicationOwner count}}",
        {"k": FIXTURE_ORG.on_prem_key, "t": WEEK},
        False,
    ),
    "getCustomReportOvertime": (
        "query($t: TimeFilter!, $d: DataFilter!){getCustomReportOvertime(dataFilter: $d, timeFilter: $t, metric: HIT_COUNT, "
        "groupByFields: [API_NAME, API_VERSION], groupByValues: [\"Orders API\", \"v1.0\"], granularity: \"1d\")"
        "{granularity usage{timeSpan value}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getCustomReportTopOvertime": (
        "query($t: TimeFilter!, $d: DataFilter!){getCustomReportTopOvertime(dataFilter: $d, timeFilter: $t, metric: TOTAL_LATENCY, "
        "groupByFields: [API_NAME, APPLICATION_NAME], groupByValues: [\"Orders API\"], granularity: \"1d\")"
        "{granularity usage{groupByValue usage{timeSpan value}}}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getGroupByValues": (
        "query($d: DataFilter!){getGroupByValues(dataFilter: $d, groupByFields: [API_NAME, API_VERSION], groupByValues: [])}",
        {"d": PRODUCTION_ONLY},
        False,
    ),
    "getTaskExecutionStats": (
        "query($t: TimeFilter!, $d: DataFilter!){getTaskExecutionStats(dataFilter: $d, timeFilter: $t){totalExecutions "
        "successfulJobs failedJobs timeoutJobs errorCount errorRatePercent successRatePercent}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
    "getAutomationExecutionTrend": (
        "query($t: TimeFilter!, $d: DataFilter!){getAutomationExecutionTrend(dataFilter: $d, timeFilter: $t, interval: \"1d\")"
        "{timestamp totalCount successCount failureCount}}",
        {"t": WEEK, "d": PRODUCTION_ONLY},
        False,
    ),
}


# ---- every field ----


def test_field_table_covers_every_query_field() -> None:
    """The table of field queries names each of the 38 documented and 2 observed Query fields."""
    schema_fields = set(insights_schema().query_type.fields)

    assert len(schema_fields) == 40
    assert set(FIELD_QUERIES) == schema_fields


@pytest.mark.parametrize("field", sorted(FIELD_QUERIES))
async def test_query_field_resolves_with_data(service: InsightsService, field: str) -> None:
    """Each Query field returns data and no errors for a realistic query."""
    query, variables, may_be_empty = FIELD_QUERIES[field]

    data = await data_of(service, query, **variables)

    assert field in data
    assert data[field] is not None
    if not may_be_empty:
        assert data[field] not in ([], 0, {}), data[field]


async def test_sample_query_lists_both_environments(service: InsightsService) -> None:
    """The documentation's sample query returns the fixture organization's two environments."""
    data = await data_of(service, SAMPLE_QUERY, org={"orgId": ORG})

    assert data == {
        "listEnvironments": [
            {"id": DEVELOPMENT.id, "name": "Development"},
            {"id": PRODUCTION.id, "name": "Production"},
        ]
    }


async def test_list_environments_returns_aliases(service: InsightsService) -> None:
    """Environments carry their external, internal and sandbox aliases and the type CHOREO."""
    query, variables, _ = FIELD_QUERIES["listEnvironments"]

    environments = (await data_of(service, query, **variables))["listEnvironments"]

    assert environments[1] == {
        "id": PRODUCTION.id,
        "externalEnvId": "prod-us-east-azure",
        "internalEnvId": "Prod-Internal",
        "sandboxEnvId": "sandbox-prod",
        "name": "Production",
        "type": "CHOREO",
    }
    assert environments[0]["type"] == "CHOREO"


async def test_list_organizations_returns_fixture_org(service: InsightsService) -> None:
    """listOrganizations returns the fixture organization's id, UUID, handle and name."""
    data = await data_of(service, "{listOrganizations{id uuid handle name}}")

    assert data["listOrganizations"] == [
        {"id": FIXTURE_ORG.id, "uuid": ORG, "handle": "acme", "name": FIXTURE_ORG.name}
    ]


async def test_list_all_apis_filters_by_provider(service: InsightsService) -> None:
    """listAllAPI with a provider returns only that provider's APIs, with both version styles."""
    query = "query($d: DataFilter!, $p: String){listAllAPI(provider: $p, dataFilter: $d){name version provider}}"

    everything = (await data_of(service, query, d=ALL_ENVIRONMENTS))["listAllAPI"]
    lena = (await data_of(service, query, d=ALL_ENVIRONMENTS, p="lena.fischer@acme.example"))["listAllAPI"]

    assert len(everything) == 6
    assert {api["version"] for api in everything} == {"v1.0", "1.0.0"}
    assert [api["name"] for api in lena] == ["Inventory Service", "Shipping Rates API"]


# ---- consistency ----

TOTALS_AND_SUMMARIES = """
query($t: TimeFilter!, $d: DataFilter!, $g: String) {
  getTotalTraffic(filter: $t, dataFilter: $d)
  getTotalErrors(filter: $t, dataFilter: $d)
  getSuccessSummary(filter: $t, dataFilter: $d, granularity: $g) { granularity summary { timeSpan requestCount } }
  getErrorSummary(filter: $t, dataFilter: $d, granularity: $g) { granularity summary { timeSpan errorCount } }
}
"""


@pytest.mark.parametrize(
    ("time_filter", "granularity"),
    [
        (WEEK, "1h"),
        (WEEK, "1d"),
        (WEEK, "1w"),
        ({"from": "2025-06-17T03:17:41.5Z", "to": "2025-06-17T09:02:13Z"}, "15m"),
        ({"from": "2025-06-17T03:17:41Z", "to": "2025-06-17T04:02:13.999Z"}, "1m"),
        ({"from": "2025-05-01T00:00:00-03:30", "to": "2025-06-18T11:13:00Z"}, None),
    ],
)
async def test_total_traffic_equals_sum_of_buckets(service: InsightsService, time_filter: dict, granularity: str | None) -> None:
    """getTotalTraffic equals the success buckets plus the error buckets, and getTotalErrors the error buckets."""
    data = await data_of(service, TOTALS_AND_SUMMARIES, t=time_filter, d=ALL_ENVIRONMENTS, g=granularity)

    successes = sum(row["requestCount"] for row in data["getSuccessSummary"]["summary"])
    errors = sum(row["errorCount"] for row in data["getErrorSummary"]["summary"])
    assert data["getTotalTraffic"] > 0
    assert data["getTotalTraffic"] == successes + errors
    assert data["getTotalErrors"] == errors
    assert [row["timeSpan"] for row in data["getSuccessSummary"]["summary"]] == [
        row["timeSpan"] for row in data["getErrorSummary"]["summary"]
    ]


async def test_totals_agree_across_granularities(service: InsightsService) -> None:
    """One range summed at 1m, 15m and 1h gives the same success count."""
    time_filter = {"from": "2025-06-17T10:07:00Z", "to": "2025-06-17T11:52:30Z"}
    sums = {}
    for granularity in ("1m", "15m", "1h"):
        data = await data_of(service, TOTALS_AND_SUMMARIES, t=time_filter, d=PRODUCTION_ONLY, g=granularity)
        sums[granularity] = sum(row["requestCount"] for row in data["getSuccessSummary"]["summary"])

    assert sums["1m"] > 0
    assert sums["1m"] == sums["15m"]
    assert sums["15m"] == sums["1h"]


async def test_split_range_totals_add_up(service: InsightsService) -> None:
    """The traffic of a range equals the traffic of its two halves split at an odd instant."""
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"
    start, middle, end = "2025-06-12T08:13:27Z", "2025-06-14T19:44:09.25Z", "2025-06-16T01:00:00Z"

    whole = (await data_of(service, query, t={"from": start, "to": end}, d=ALL_ENVIRONMENTS))["getTotalTraffic"]
    first = (await data_of(service, query, t={"from": start, "to": middle}, d=ALL_ENVIRONMENTS))["getTotalTraffic"]
    second = (await data_of(service, query, t={"from": middle, "to": end}, d=ALL_ENVIRONMENTS))["getTotalTraffic"]

    assert whole == first + second


async def test_org_traffic_equals_sum_of_api_traffic(service: InsightsService) -> None:
    """getTotalTraffic equals the sum of getTotalTrafficByAPI over all APIs."""
    total_query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"
    api_query = "query($t: TimeFilter, $d: DataFilter!, $api: ID!){getTotalTrafficByAPI(filter: $t, dataFilter: $d, apiId: $api)}"

    total = (await data_of(service, total_query, t=WEEK, d=ALL_ENVIRONMENTS))["getTotalTraffic"]
    per_api = [
        (await data_of(service, api_query, t=WEEK, d=ALL_ENVIRONMENTS, api=api.id))["getTotalTrafficByAPI"]
        for api in FIXTURE_ORG.apis
    ]

    assert all(count > 0 for count in per_api)
    assert total == sum(per_api)


async def test_api_usage_series_sums_to_total(service: InsightsService) -> None:
    """The buckets of getAPIUsageOverTime for one API sum to getTotalTrafficByAPI."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $api: ID!, $ids: [String]) {
      getTotalTrafficByAPI(filter: $t, dataFilter: $d, apiId: $api)
      getAPIUsageOverTime(timeFilter: $t, apiUsageOvertimeFilter: {apiIds: $ids, granularity: "1h"}, dataFilter: $d) {
        apiId usage { count }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY, api=INVENTORY, ids=[INVENTORY])

    [usage] = data["getAPIUsageOverTime"]
    assert usage["apiId"] == INVENTORY
    assert sum(row["count"] for row in usage["usage"]) == data["getTotalTrafficByAPI"]


async def test_api_traffic_is_apps_plus_unauthenticated(service: InsightsService) -> None:
    """An API's traffic is its applications' requests plus the 401s that carry no application."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $api: ID!, $ids: [String], $apiId: String) {
      getTotalTrafficByAPI(filter: $t, dataFilter: $d, apiId: $api)
      getAPIsUsageByApplications(timeFilter: $t, apiUsageByAppFilter: {apiIds: $ids}, dataFilter: $d) { count }
      getErrorsByStatusCode(timeFilter: $t, errorCountByStatusCodeFilter: {apiId: $apiId, errorType: PROXY}, dataFilter: $d) {
        errors { errorCountByCode { statusCode count } }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY, api=ORDERS, ids=[ORDERS], apiId=ORDERS)

    by_application = sum(row["count"] for row in data["getAPIsUsageByApplications"])
    [codes] = data["getErrorsByStatusCode"]["errors"]
    unauthenticated = sum(row["count"] for row in codes["errorCountByCode"] if row["statusCode"] == "401")
    assert unauthenticated > 0
    assert data["getTotalTrafficByAPI"] == by_application + unauthenticated


async def test_app_series_match_app_totals(service: InsightsService) -> None:
    """An application's buckets in getAPIUsageByAppOverTime sum to its getAPIsUsageByApplications count."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $ids: [String], $apps: [String]) {
      getAPIUsageByAppOverTime(timeFilter: $t, apiUsageOvertimeFilter: {apiIds: $ids, appIds: $apps}, dataFilter: $d) {
        usage { applicationId usage { count } }
      }
      getAPIsUsageByApplications(timeFilter: $t, apiUsageByAppFilter: {apiIds: $ids, appIds: $apps}, dataFilter: $d) {
        applicationId count
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY, ids=[ORDERS], apps=[WEB_APP])

    [series] = data["getAPIUsageByAppOverTime"]["usage"]
    [row] = data["getAPIsUsageByApplications"]
    assert series["applicationId"] == WEB_APP
    assert sum(point["count"] for point in series["usage"]) == row["count"]


async def test_proxy_target_errors_sum_to_summary(service: InsightsService) -> None:
    """Per bucket, proxy errors plus target errors equal the error summary's count."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getErrorSummary(filter: $t, dataFilter: $d, granularity: "1h") { summary { timeSpan errorCount } }
      getProxyTargetErrorsOverTime(timeFilter: $t, errorsByStatusCodeFilter: {granularity: "1h"}, dataFilter: $d) {
        timeSpan proxy { _4xx _5xx total } target { _4xx _5xx total }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS)

    summary = {row["timeSpan"]: row["errorCount"] for row in data["getErrorSummary"]["summary"]}
    split = data["getProxyTargetErrorsOverTime"]
    assert len(split) == len(summary)
    for row in split:
        assert row["proxy"]["total"] == row["proxy"]["_4xx"] + row["proxy"]["_5xx"]
        assert row["proxy"]["total"] + row["target"]["total"] == summary[row["timeSpan"]]


async def test_error_categories_sum_to_proxy_errors(service: InsightsService) -> None:
    """The categories of one API's proxy errors sum to getTotalErrorsByAPI.proxy."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $api: ID!, $apiId: String) {
      getTotalErrorsByAPI(filter: $t, dataFilter: $d, apiId: $api) { proxy }
      getErrorsByCategory(timeFilter: $t, errorsByCategoryFilter: {apiId: $apiId}, dataFilter: $d) {
        errors { auth targetConnectivity throttled other }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS, api=SHIPPING, apiId=SHIPPING)

    by_category = sum(sum(row.values()) for row in data["getErrorsByCategory"]["errors"])
    assert data["getTotalErrorsByAPI"]["proxy"] > 0
    assert by_category == data["getTotalErrorsByAPI"]["proxy"]


async def test_unselected_error_categories_are_null(service: InsightsService) -> None:
    """Categories outside errorsByCategoryFilter.categories come back as null."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getErrorsByCategory(timeFilter: $t, errorsByCategoryFilter: {categories: ["THROTTLED"], granularity: "1d"}, dataFilter: $d) {
        errors { auth targetConnectivity throttled other }
      }
    }
    """

    rows = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getErrorsByCategory"]["errors"]

    assert rows
    assert all(row["auth"] is None and row["other"] is None and row["targetConnectivity"] is None for row in rows)
    assert all(isinstance(row["throttled"], int) for row in rows)


async def test_resource_usage_sums_to_api_traffic(service: InsightsService) -> None:
    """The resources of an API split its traffic exactly."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $api: ID!, $ids: [String]) {
      getTotalTrafficByAPI(filter: $t, dataFilter: $d, apiId: $api)
      getResourceUsage(timeFilter: $t, resourceUsageFilter: {apiIds: $ids, paginationFilter: {limit: 100}}, dataFilter: $d) {
        usage { apiId apiResourceTemplate apiMethod count } pagination { total }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY, api=ORDERS, ids=[ORDERS])

    rows = data["getResourceUsage"]["usage"]
    assert data["getResourceUsage"]["pagination"]["total"] == len(rows) == 5
    assert sum(row["count"] for row in rows) == data["getTotalTrafficByAPI"]


@pytest.mark.parametrize(("field", "key"), [("getTopPlatforms", "platform"), ("getTopUserAgents", "userAgent")])
async def test_top_devices_list_nine_and_other(service: InsightsService, field: str, key: str) -> None:
    """Platforms and user agents list the top nine and an Other row, summing to the total traffic."""
    query = f"""
    query($t: TimeFilter!, $d: DataFilter!) {{
      getTotalTraffic(filter: $t, dataFilter: $d)
      {field}(timeFilter: $t, dataFilter: $d) {{ {key} count }}
    }}
    """

    data = await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS)

    rows = data[field]
    assert len(rows) == 10
    assert rows[-1][key] == "Other"
    counts = [row["count"] for row in rows[:-1]]
    assert counts == sorted(counts, reverse=True)
    assert sum(row["count"] for row in rows) == data["getTotalTraffic"]


async def test_cache_hit_percentage_matches_counts(service: InsightsService) -> None:
    """Each cache bucket's hitPercentage is hits over hits plus misses, rounded to two decimals."""
    _, variables, _ = FIELD_QUERIES["getCacheHitsAndMisses"]
    query = FIELD_QUERIES["getCacheHitsAndMisses"][0]

    summary = (await data_of(service, query, **variables))["getCacheHitsAndMisses"]["summary"]

    assert summary
    for row in summary:
        assert row["hits"] > 0
        assert row["hitPercentage"] == round(100 * row["hits"] / (row["hits"] + row["misses"]), 2)


async def test_latency_fields_are_ordered_and_positive(service: InsightsService) -> None:
    """Latency buckets have positive p95 values above their medians, and the response exceeds the backend."""
    query, variables, _ = FIELD_QUERIES["getLatency"]

    summary = (await data_of(service, query, **variables))["getLatency"]["summary"]

    assert summary
    for row in summary:
        assert row["response"] > row["backend"] > 0
        assert row["responseMedian"] < row["response"]
        assert row["backendMedian"] < row["backend"]


async def test_slowest_apis_sorted_by_latency(service: InsightsService) -> None:
    """topSlowestAPIs returns at most `limit` APIs, slowest first."""
    query = "query($t: TimeFilter!, $d: DataFilter!){topSlowestAPIs(filter: $t, dataFilter: $d, limit: 4){apiId latency}}"

    rows = (await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS))["topSlowestAPIs"]

    assert len(rows) == 4
    assert [row["latency"] for row in rows] == sorted((row["latency"] for row in rows), reverse=True)
    assert rows[0]["apiId"] == SHIPPING


async def test_custom_report_matches_api_usage(service: InsightsService) -> None:
    """A HIT_COUNT report grouped by one API's name and version equals that API's usage buckets."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $ids: [String]) {
      getCustomReportOvertime(dataFilter: $d, timeFilter: $t, metric: HIT_COUNT, groupByFields: [API_NAME, API_VERSION],
                              groupByValues: ["Orders API", "v1.0"], granularity: "1d") { usage { timeSpan value } }
      getAPIUsageOverTime(timeFilter: $t, apiUsageOvertimeFilter: {apiIds: $ids, granularity: "1d"}, dataFilter: $d) {
        usage { timeSpan count }
      }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY, ids=[ORDERS])

    report = [(row["timeSpan"], row["value"]) for row in data["getCustomReportOvertime"]["usage"]]
    usage = [(row["timeSpan"], row["count"]) for row in data["getAPIUsageOverTime"][0]["usage"]]
    assert report == usage


async def test_custom_top_report_ranks_groups(service: InsightsService) -> None:
    """A top report groups by the last field and orders the groups by their totals."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getCustomReportTopOvertime(dataFilter: $d, timeFilter: $t, metric: HIT_COUNT, groupByFields: [API_NAME, APPLICATION_NAME],
                                 groupByValues: ["Orders API"], granularity: "1d") { usage { groupByValue usage { value } } }
    }
    """

    groups = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getCustomReportTopOvertime"]["usage"]

    assert [group["groupByValue"] for group in groups] == ["Acme Web Storefront", "Acme Mobile App", "Partner Portal"]
    totals = [sum(point["value"] for point in group["usage"]) for group in groups]
    assert totals == sorted(totals, reverse=True)


async def test_group_by_values_lists_api_versions(service: InsightsService) -> None:
    """getGroupByValues lists each API's (name, version) pair once, and filters by leading values."""
    query = "query($d: DataFilter!, $v: [String]!){getGroupByValues(dataFilter: $d, groupByFields: [API_NAME, API_VERSION], groupByValues: $v)}"

    pairs = (await data_of(service, query, d=ALL_ENVIRONMENTS, v=[]))["getGroupByValues"]
    orders = (await data_of(service, query, d=ALL_ENVIRONMENTS, v=["Orders API"]))["getGroupByValues"]

    assert len(pairs) == 6
    assert ["Inventory Service", "1.0.0"] in pairs
    assert orders == [["Orders API", "v1.0"]]


async def test_task_execution_stats_match_trend(service: InsightsService) -> None:
    """Automation totals equal the sums of the trend points, and the rates follow from the counts."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getTaskExecutionStats(dataFilter: $d, timeFilter: $t) {
        totalExecutions successfulJobs failedJobs timeoutJobs errorCount errorRatePercent successRatePercent
      }
      getAutomationExecutionTrend(dataFilter: $d, timeFilter: $t, interval: "1h") { totalCount successCount failureCount }
    }
    """

    data = await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY)

    stats = data["getTaskExecutionStats"]
    trend = data["getAutomationExecutionTrend"]
    # Per week: inventory-sync every 15 minutes, stale-cart-cleanup hourly, nightly-invoice-export daily.
    assert stats["totalExecutions"] == 7 * (96 + 24 + 1)
    assert stats["totalExecutions"] == sum(point["totalCount"] for point in trend)
    assert stats["successfulJobs"] == sum(point["successCount"] for point in trend)
    assert stats["errorCount"] == stats["failedJobs"] + stats["timeoutJobs"] == sum(point["failureCount"] for point in trend)
    assert stats["successRatePercent"] == round(100 * stats["successfulJobs"] / stats["totalExecutions"], 2)


async def test_on_prem_key_variant_matches_keyless(service: InsightsService) -> None:
    """The on-prem-key variant returns the keyless variant's rows for the fixture's key and none for another key."""
    keyless, keyless_variables, _ = FIELD_QUERIES["getSuccessAPIsUsageByApplications"]
    keyed, keyed_variables, _ = FIELD_QUERIES["getSuccessAPIsUsageByApplicationsWithOnPremKey"]

    expected = (await data_of(service, keyless, **keyless_variables))["getSuccessAPIsUsageByApplications"]
    with_key = (await data_of(service, keyed, **keyed_variables))["getSuccessAPIsUsageByApplicationsWithOnPremKey"]
    wrong_key = (await data_of(service, keyed, **{**keyed_variables, "k": "not-a-key"}))[
        "getSuccessAPIsUsageByApplicationsWithOnPremKey"
    ]

    assert with_key == expected
    assert all(row["apiCreatorTenantDomain"] == "carbon.super" for row in expected)
    assert wrong_key == []


async def test_geo_location_reports_on_prem_environments() -> None:
    """An on-prem environment gets per-country counts that sum to its traffic, largest first."""
    on_prem = Environment(
        id="on-prem-gateway",
        name="Self-hosted",
        type="ON_PREM",
        external_env_id="onprem-eu-west",
        internal_env_id=None,
        sandbox_env_id=None,
        traffic_scale=0.5,
    )
    organization = dataclasses.replace(FIXTURE_ORG, environments=(*FIXTURE_ORG.environments, on_prem))
    service = InsightsService(clock=lambda: NOW, organization=organization)
    data_filter = {**ALL_ENVIRONMENTS, "environmentId": "onprem-eu-west"}
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getTotalTraffic(filter: $t, dataFilter: $d)
      getAPIUsageByGeoLocation(timeFilter: $t, dataFilter: $d) { country count }
    }
    """

    data = await data_of(service, query, t=WEEK, d=data_filter)

    rows = data["getAPIUsageByGeoLocation"]
    assert rows[0]["country"] == "United States"
    assert [row["count"] for row in rows] == sorted((row["count"] for row in rows), reverse=True)
    assert sum(row["count"] for row in rows) == data["getTotalTraffic"]


# ---- determinism ----

DASHBOARD_QUERY = """
query($t: TimeFilter!, $d: DataFilter!) {
  getTotalTraffic(filter: $t, dataFilter: $d)
  getTotalErrors(filter: $t, dataFilter: $d)
  getOverallLatency(filter: $t, dataFilter: $d)
  getLatencySummary(filter: $t, latencySummaryFilter: {granularity: "1h"}, dataFilter: $d) { summary { timeSpan latencyTime } }
  getSuccessSummary(filter: $t, dataFilter: $d, granularity: "1h") { summary { timeSpan requestCount } }
  getErrorSummary(filter: $t, dataFilter: $d, granularity: "1h") { summary { timeSpan errorCount } }
}
"""


async def test_repeated_queries_return_identical_bodies() -> None:
    """Two services with the same clock return byte-identical bodies for a dashboard query."""
    first = await InsightsService(clock=lambda: NOW).execute({"query": DASHBOARD_QUERY, "variables": {"t": WEEK, "d": ALL_ENVIRONMENTS}})
    second = await InsightsService(clock=lambda: NOW).execute({"query": DASHBOARD_QUERY, "variables": {"t": WEEK, "d": ALL_ENVIRONMENTS}})

    assert first[0] == 200
    assert json.dumps(first, separators=(",", ":")) == json.dumps(second, separators=(",", ":"))


async def test_past_data_stable_as_clock_advances(service: InsightsService) -> None:
    """A range that ended before now gets the same result a day later."""
    later = InsightsService(clock=lambda: NOW + 86400)
    variables = {"t": WEEK, "d": PRODUCTION_ONLY}

    assert await run(service, DASHBOARD_QUERY, **variables) == await run(later, DASHBOARD_QUERY, **variables)


# ---- time handling ----


async def test_bucket_timestamps_use_offset_of_from(service: InsightsService) -> None:
    """Buckets are rendered in the offset of `from` with seven fractional digits, aligned to UTC hours."""
    query = FIELD_QUERIES["getSuccessSummary"][0].replace('"1d"', '"1h"')

    summary = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getSuccessSummary"]["summary"]

    assert len(summary) == 168
    assert all(TIME_SPAN.match(row["timeSpan"]) for row in summary)
    assert summary[0]["timeSpan"] == "2025-06-11T17:30:00.0000000+05:30"
    assert summary[1]["timeSpan"] == "2025-06-11T18:30:00.0000000+05:30"


async def test_utc_from_renders_plus_zero_offset(service: InsightsService) -> None:
    """A `from` in Z or without a zone renders buckets with +00:00."""
    query = FIELD_QUERIES["getSuccessSummary"][0]

    for start in ("2025-06-15T00:00:00Z", "2025-06-15T00:00:00"):
        time_filter = {"from": start, "to": "2025-06-17T00:00:00Z"}
        summary = (await data_of(service, query, t=time_filter, d=PRODUCTION_ONLY))["getSuccessSummary"]["summary"]
        assert [row["timeSpan"] for row in summary] == [
            "2025-06-15T00:00:00.0000000+00:00",
            "2025-06-16T00:00:00.0000000+00:00",
        ]


async def test_negative_offset_renders_in_from_offset(service: InsightsService) -> None:
    """A `from` in -03:30 renders UTC-aligned daily buckets at 20:30 local time."""
    query = FIELD_QUERIES["getSuccessSummary"][0]
    time_filter = {"from": "2025-06-14T20:30:00-03:30", "to": "2025-06-16T20:30:00-03:30"}

    summary = (await data_of(service, query, t=time_filter, d=PRODUCTION_ONLY))["getSuccessSummary"]["summary"]

    assert [row["timeSpan"] for row in summary] == [
        "2025-06-14T20:30:00.0000000-03:30",
        "2025-06-15T20:30:00.0000000-03:30",
    ]


async def test_weekly_buckets_start_on_monday(service: InsightsService) -> None:
    """Buckets of 7d and 1w start on Monday 00:00 UTC."""
    query = FIELD_QUERIES["getSuccessSummary"][0]
    time_filter = {"from": "2025-05-21T00:00:00Z", "to": "2025-06-18T00:00:00Z"}

    for granularity in ("7d", "1w"):
        data = await data_of(service, query.replace('"1d"', f'"{granularity}"'), t=time_filter, d=PRODUCTION_ONLY)
        starts = [utc(row["timeSpan"][:19] + "+00:00") for row in data["getSuccessSummary"]["summary"]]
        assert data["getSuccessSummary"]["granularity"] == granularity
        assert starts[0] == datetime(2025, 5, 19, tzinfo=timezone.utc)
        assert all(start.weekday() == 0 for start in starts)


@pytest.mark.parametrize(
    "start",
    [
        "2025-06-16T05:30:00.000+05:30",
        "2025-06-16T00:00:00Z",
        "2025-06-16T00:00:00",
        "2025-06-16T00:00",
        "2025-06-16T00:00+00:00",
        "2025-06-16T00:00:00.0Z",
        "2025-06-16T00:00:00.000000000Z",
        "2025-06-16T00:00:00.000+00:00",
        "2025-06-15T19:00:00.0000000-05:00",
    ],
)
async def test_timestamp_forms_are_accepted(service: InsightsService, start: str) -> None:
    """Every ISO-8601 form that real clients send names the same instant."""
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"
    reference = {"from": "2025-06-16T00:00:00Z", "to": "2025-06-17T00:00:00Z"}

    expected = (await data_of(service, query, t=reference, d=PRODUCTION_ONLY))["getTotalTraffic"]
    actual = (await data_of(service, query, t={"from": start, "to": "2025-06-17T00:00:00Z"}, d=PRODUCTION_ONLY))["getTotalTraffic"]

    assert actual == expected


async def test_fractional_digits_up_to_nine_accepted(service: InsightsService) -> None:
    """Timestamps with one to nine fractional digits parse."""
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"

    for digits in range(0, 10):
        fraction = "." + "1" * digits if digits else ""
        time_filter = {"from": f"2025-06-16T00:00:00{fraction}+05:30", "to": "2025-06-17T00:00:00+05:30"}
        status, body = await run(service, query, t=time_filter, d=PRODUCTION_ONLY)
        assert status == 200
        assert "errors" not in body, (digits, body)


@pytest.mark.parametrize(
    ("duration", "granularity"),
    [
        (timedelta(minutes=30), "1m"),
        (timedelta(hours=1), "1m"),
        (timedelta(hours=1, minutes=1), "15m"),
        (timedelta(hours=12), "15m"),
        (timedelta(hours=13), "1h"),
        (timedelta(days=7), "1h"),
        (timedelta(days=8), "1d"),
        (timedelta(days=90), "1d"),
        (timedelta(days=91), "7d"),
        (timedelta(days=400), "7d"),
    ],
)
async def test_default_granularity_follows_range_length(service: InsightsService, duration: timedelta, granularity: str) -> None:
    """Without a granularity the range length picks it: 1h→1m, 12h→15m, 7d→1h, 90d→1d, longer→7d."""
    end = datetime(2025, 6, 18, 12, tzinfo=timezone.utc)
    query = "query($t: TimeFilter!, $d: DataFilter!){getErrorSummary(filter: $t, dataFilter: $d){granularity}}"

    data = await data_of(service, query, t=window(end - duration, end), d=PRODUCTION_ONLY)

    assert data["getErrorSummary"]["granularity"] == granularity


async def test_series_stop_at_current_minute(service: InsightsService) -> None:
    """A range reaching past now lists buckets only up to now, and a future range has no data."""
    query = TOTALS_AND_SUMMARIES
    reaching = {"from": "2025-06-18T10:00:00Z", "to": "2025-06-18T14:00:00Z"}
    future = {"from": "2025-06-19T00:00:00Z", "to": "2025-06-20T00:00:00Z"}

    partial = await data_of(service, query, t=reaching, d=PRODUCTION_ONLY, g="1h")
    empty = await data_of(service, query, t=future, d=PRODUCTION_ONLY, g="1h")

    assert [row["timeSpan"][11:16] for row in partial["getSuccessSummary"]["summary"]] == ["10:00", "11:00"]
    assert empty["getTotalTraffic"] == 0
    assert empty["getSuccessSummary"]["summary"] == []


async def test_ranges_before_data_start_are_empty(service: InsightsService) -> None:
    """The documentation's 2021 example range predates the fixture's data and gets zeros and empty lists."""
    data = await data_of(
        service, TOTALS_AND_SUMMARIES, t={"from": "2021-06-21T00:00:00.000+05:30", "to": "2021-06-28T00:00:00.000+05:30"}, d=ALL_ENVIRONMENTS
    )

    assert data["getTotalTraffic"] == 0
    assert data["getErrorSummary"]["summary"] == []


# ---- data visibility ----

EMPTY_CHECK_QUERY = """
query($t: TimeFilter!, $d: DataFilter!) {
  getTotalTraffic(filter: $t, dataFilter: $d)
  getTotalErrors(filter: $t, dataFilter: $d)
  getOverallLatency(filter: $t, dataFilter: $d)
  getSuccessSummary(filter: $t, dataFilter: $d) { summary { timeSpan } }
  listAllAPI(dataFilter: $d) { id }
  getTopPlatforms(timeFilter: $t, dataFilter: $d) { platform }
  getAlertSummary(timeFilter: $t, dataFilter: $d) { usage { apiId } pagination { total } }
}
"""


@pytest.mark.parametrize(
    "data_filter",
    [
        {**ALL_ENVIRONMENTS, "environmentId": "no-such-environment"},
        {**ALL_ENVIRONMENTS, "environmentIds": ["no-such-environment", None]},
        {**ALL_ENVIRONMENTS, "orgId": FIXTURE_ORG.handle},
        {**ALL_ENVIRONMENTS, "orgId": "00000000-0000-0000-0000-000000000000"},
        {**ALL_ENVIRONMENTS, "tenant": "wso2.com"},
        {**ALL_ENVIRONMENTS, "projectId": "no-such-project"},
    ],
)
async def test_unknown_scope_gives_empty_results(service: InsightsService, data_filter: dict) -> None:
    """An unknown environment, organization, tenant or project gets zeros and empty lists, not errors."""
    data = await data_of(service, EMPTY_CHECK_QUERY, t=WEEK, d=data_filter)

    assert data["getTotalTraffic"] == 0
    assert data["getTotalErrors"] == 0
    assert data["getOverallLatency"] == 0
    assert data["getSuccessSummary"]["summary"] == []
    assert data["listAllAPI"] == []
    assert data["getTopPlatforms"] == []
    assert data["getAlertSummary"] == {"usage": [], "pagination": {"total": 0}}


@pytest.mark.parametrize("alias", ["prod-us-east-azure", "Prod-Internal", "sandbox-prod", PRODUCTION.id])
async def test_environment_aliases_select_same_data(service: InsightsService, alias: str) -> None:
    """Every alias of Production, alone or all together in environmentIds, gives Production's traffic once."""
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"

    expected = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getTotalTraffic"]
    by_alias = (await data_of(service, query, t=WEEK, d={**ALL_ENVIRONMENTS, "environmentId": alias}))["getTotalTraffic"]
    all_aliases = {**ALL_ENVIRONMENTS, "environmentIds": list(PRODUCTION.aliases)}
    together = (await data_of(service, query, t=WEEK, d=all_aliases))["getTotalTraffic"]

    assert by_alias == expected
    assert together == expected


async def test_environments_add_up_to_organization(service: InsightsService) -> None:
    """Development plus Production equals the organization without an environment filter."""
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"

    total = (await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS))["getTotalTraffic"]
    development = (await data_of(service, query, t=WEEK, d={**ALL_ENVIRONMENTS, "environmentId": "dev-us-east-azure"}))["getTotalTraffic"]
    production = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getTotalTraffic"]

    assert 0 < development < production
    assert total == development + production


async def test_project_filter_keeps_project_apis(service: InsightsService) -> None:
    """A projectId keeps the APIs of that project only."""
    query = "query($d: DataFilter!){listAllAPI(dataFilter: $d){name}}"
    logistics = FIXTURE_ORG.projects[1].id

    apis = (await data_of(service, query, d={**ALL_ENVIRONMENTS, "projectId": logistics}))["listAllAPI"]

    assert [api["name"] for api in apis] == ["Inventory Service", "Shipping Rates API"]


# ---- pagination and alerts ----


async def test_pagination_defaults_are_echoed(service: InsightsService) -> None:
    """Without a PaginationFilter the page is 5 rows from offset 0, sorted by count ascending."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getResourceUsage(timeFilter: $t, dataFilter: $d) { usage { count } pagination { total limit offset sortBy sortOrder } }
    }
    """

    result = (await data_of(service, query, t=WEEK, d=PRODUCTION_ONLY))["getResourceUsage"]

    assert result["pagination"] == {"total": 18, "limit": 5, "offset": 0, "sortBy": "count", "sortOrder": "asc"}
    counts = [row["count"] for row in result["usage"]]
    assert len(counts) == 5
    assert counts == sorted(counts)


async def test_pages_do_not_overlap(service: InsightsService) -> None:
    """Consecutive pages of getErrorsDetails are disjoint and cover the first rows of the full listing."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!, $p: PaginationFilter) {
      getErrorsDetails(timeFilter: $t, errorsDetailsFilter: {granularity: "1d", paginationFilter: $p}, dataFilter: $d) {
        usage { apiId timeSpan applicationId reason count } pagination { total }
      }
    }
    """
    variables = {"t": WEEK, "d": PRODUCTION_ONLY}

    full = (await data_of(service, query, **variables, p={"limit": 20, "sortBy": "count", "sortOrder": "desc"}))["getErrorsDetails"]
    first = (await data_of(service, query, **variables, p={"limit": 10, "sortBy": "count", "sortOrder": "desc"}))["getErrorsDetails"]
    second = (await data_of(service, query, **variables, p={"limit": 10, "offset": 10, "sortBy": "count", "sortOrder": "desc"}))[
        "getErrorsDetails"
    ]

    assert full["pagination"]["total"] > 20
    assert first["usage"] + second["usage"] == full["usage"]
    counts = [row["count"] for row in full["usage"]]
    assert counts == sorted(counts, reverse=True)


async def test_alert_count_ranking_is_always_descending(service: InsightsService) -> None:
    """getTopAPIsByAlertCount sorts by count in descending order even when asc is requested."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getTopAPIsByAlertCount(timeFilter: $t, topAPIsByAlertCountFilter: {paginationFilter: {limit: 10, sortOrder: "asc"}},
                             dataFilter: $d) { usage { apiId count } pagination { sortBy sortOrder total } }
    }
    """

    result = (await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS))["getTopAPIsByAlertCount"]

    counts = [row["count"] for row in result["usage"]]
    assert result["pagination"]["sortOrder"] == "desc"
    assert result["pagination"]["sortBy"] == "count"
    assert len(counts) >= 2
    assert counts == sorted(counts, reverse=True)


async def test_alert_counts_match_alert_summary(service: InsightsService) -> None:
    """The alert counts per API add up to the alert summary's total."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getTopAPIsByAlertCount(timeFilter: $t, topAPIsByAlertCountFilter: {paginationFilter: {limit: 10}}, dataFilter: $d) {
        usage { count }
      }
      getAlertSummary(timeFilter: $t, dataFilter: $d) { pagination { total } }
    }
    """

    data = await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS)

    assert sum(row["count"] for row in data["getTopAPIsByAlertCount"]["usage"]) == data["getAlertSummary"]["pagination"]["total"]


async def test_alerts_are_kept_one_week(service: InsightsService) -> None:
    """Alerts older than seven days before now are not reported, whatever the range."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getAlertSummary(timeFilter: $t, alertSummaryFilter: {paginationFilter: {limit: 1000}}, dataFilter: $d) {
        usage { timestamp category metric severity message } pagination { total }
      }
    }
    """
    month = {"from": "2025-05-18T12:00:00Z", "to": "2025-06-18T12:00:00Z"}
    old = {"from": "2025-05-01T00:00:00Z", "to": "2025-06-11T11:59:00Z"}

    recent = (await data_of(service, query, t=month, d=ALL_ENVIRONMENTS))["getAlertSummary"]
    expired = (await data_of(service, query, t=old, d=ALL_ENVIRONMENTS))["getAlertSummary"]

    week_ago = datetime.fromtimestamp(NOW - 7 * 86400, timezone.utc)
    assert recent["usage"]
    assert all(utc(alert["timestamp"]) >= week_ago for alert in recent["usage"])
    assert all(alert["category"] in ("TRAFFIC", "LATENCY") for alert in recent["usage"])
    assert all(alert["metric"] in ("TOTAL_TRAFFIC", "RESPONSE_LATENCY") for alert in recent["usage"])
    assert all(alert["severity"] in ("LOW", "MEDIUM", "HIGH") for alert in recent["usage"])
    assert expired == {"usage": [], "pagination": {"total": 0}}


async def test_alert_category_filter(service: InsightsService) -> None:
    """alertSummaryFilter.category keeps only alerts of that category."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      getAlertSummary(timeFilter: $t, alertSummaryFilter: {category: "LATENCY", paginationFilter: {limit: 100}}, dataFilter: $d) {
        usage { category metric }
      }
    }
    """

    alerts = (await data_of(service, query, t=WEEK, d=ALL_ENVIRONMENTS))["getAlertSummary"]["usage"]

    assert alerts
    assert {alert["metric"] for alert in alerts} == {"RESPONSE_LATENCY"}


# ---- documented rejections ----

SIX_IDS = [f"id-{number}" for number in range(6)]


@pytest.mark.parametrize(
    ("query", "variables", "field", "message"),
    [
        (
            "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIUsageOverTime(timeFilter: $t, "
            "apiUsageOvertimeFilter: {apiIds: $a}, dataFilter: $d){apiId}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS, "a": SIX_IDS},
            "getAPIUsageOverTime",
            "apiUsageOvertimeFilter.apiIds has 6 entries, over the maximum of 5",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIUsageByAppOverTime(timeFilter: $t, "
            "apiUsageOvertimeFilter: {appIds: $a}, dataFilter: $d){granularity}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS, "a": SIX_IDS},
            "getAPIUsageByAppOverTime",
            "apiUsageOvertimeFilter.appIds has 6 entries, over the maximum of 5",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!, $a: [String]){getAPIsUsageByApplications(timeFilter: $t, "
            "apiUsageByAppFilter: {subscribers: $a}, dataFilter: $d){count}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS, "a": SIX_IDS},
            "getAPIsUsageByApplications",
            "apiUsageByAppFilter.subscribers has 6 entries, over the maximum of 5",
        ),
        (
            "query($d: DataFilter!, $a: [String]){listSubscribers(subscriberFilter: {apiIds: $a}, dataFilter: $d){name}}",
            {"d": ALL_ENVIRONMENTS, "a": SIX_IDS},
            "listSubscribers",
            "subscriberFilter.apiIds has 6 entries",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getAlertSummary(timeFilter: $t, alertSummaryFilter: "
            "{searchFilter: {apiIds: [\"x\"], searchText: \"\"}}, dataFilter: $d){pagination{total}}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS},
            "getAlertSummary",
            "alertSummaryFilter.searchFilter.apiIds is not allowed without alertSummaryFilter.searchFilter.searchText",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}",
            {"t": {"from": WEEK["to"], "to": WEEK["from"]}, "d": ALL_ENVIRONMENTS},
            "getTotalTraffic",
            "is not earlier than filter.to",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}",
            {"t": {"from": "2025-06-18T12:00:00Z", "to": "2025-06-18T17:30:00+05:30"}, "d": ALL_ENVIRONMENTS},
            "getTotalTraffic",
            "is not earlier than filter.to",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getSuccessSummary(filter: $t, dataFilter: $d, granularity: \"2h\"){granularity}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS},
            "getSuccessSummary",
            "granularity '2h' is not a supported granularity; use one of 1m, 15m, 1h, 1d, 7d, 1w",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getLatency(timeFilter: $t, latencyFilter: {apiId: \"x\", granularity: \"hourly\"}, "
            "dataFilter: $d){granularity}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS},
            "getLatency",
            "latencyFilter.granularity 'hourly' is not a supported granularity",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getErrorSummary(filter: $t, dataFilter: $d, granularity: \"1m\"){granularity}}",
            {"t": {"from": "2025-05-18T12:00:00Z", "to": "2025-06-18T12:00:00Z"}, "d": ALL_ENVIRONMENTS},
            "getErrorSummary",
            "granularity '1m' splits the time range into 44640 buckets, over the maximum of 2000; "
            "use a coarser granularity such as '1h'",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getTotalErrors(filter: $t, dataFilter: $d)}",
            {"t": {"from": "last week", "to": "now"}, "d": ALL_ENVIRONMENTS},
            "getTotalErrors",
            "filter.from 'last week' is not an ISO-8601 timestamp",
        ),
        (
            "query($t: TimeFilter!, $d: DataFilter!){getResourceUsage(timeFilter: $t, resourceUsageFilter: "
            "{paginationFilter: {sortOrder: \"up\"}}, dataFilter: $d){pagination{total}}}",
            {"t": WEEK, "d": ALL_ENVIRONMENTS},
            "getResourceUsage",
            "resourceUsageFilter.paginationFilter.sortOrder 'up' is invalid",
        ),
    ],
)
async def test_documented_constraint_rejects_field(
    service: InsightsService, query: str, variables: dict, field: str, message: str
) -> None:
    """A broken documented constraint nulls the field and adds an error with its path and location."""
    status, body = await run(service, query, **variables)

    assert status == 200
    assert body["data"] == {field: None}
    [error] = body["errors"]
    assert message in error["message"]
    assert error["path"] == [field]
    assert error["locations"]


async def test_rejection_keeps_sibling_fields(service: InsightsService) -> None:
    """A rejected field does not fail its sibling fields."""
    query = """
    query($t: TimeFilter!, $d: DataFilter!) {
      good: getTotalTraffic(filter: $t, dataFilter: $d)
      bad: getSuccessSummary(filter: $t, dataFilter: $d, granularity: "5m") { granularity }
    }
    """

    status, body = await run(service, query, t=WEEK, d=ALL_ENVIRONMENTS)

    assert status == 200
    assert body["data"]["good"] > 0
    assert body["data"]["bad"] is None
    assert body["errors"][0]["path"] == ["bad"]


# ---- request, parse and validation errors ----


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["query"], "must be a JSON object with a 'query' string, not a JSON array"),
        ("{listOrganizations{id}}", "not a JSON string"),
        (None, "not a JSON null"),
        ({}, "has no 'query'"),
        ({"query": 42}, "'query' must be a string"),
        ({"query": "{listOrganizations{id}}", "variables": []}, "'variables' must be a JSON object or null, not a JSON array"),
        ({"query": "{listOrganizations{id}}", "variables": "{}"}, "not a JSON string"),
        ({"query": "{listOrganizations{id}}", "operationName": 1}, "'operationName' must be a string or null"),
    ],
)
async def test_malformed_request_gets_400(service: InsightsService, payload: Any, message: str) -> None:
    """A body that is not a GraphQL request gets 400 with one error message and nothing else."""
    status, body = await service.execute(payload)

    assert status == 400
    assert list(body) == ["errors"]
    [error] = body["errors"]
    assert list(error) == ["message"]
    assert message in error["message"]


async def test_null_variables_are_accepted(service: InsightsService) -> None:
    """variables and operationName may be null."""
    status, body = await service.execute({"query": "{listOrganizations{handle}}", "variables": None, "operationName": None})

    assert status == 200
    assert body == {"data": {"listOrganizations": [{"handle": "acme"}]}}


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        ("{listOrganizations{id}", {}, "Syntax Error"),
        ("{listOrganizations{nope}}", {}, "Cannot query field 'nope' on type 'Organization'."),
        ("{getTotalTraffic}", {}, "Argument 'Query.getTotalTraffic(filter:)' of type 'TimeFilter!' is required"),
        ("mutation {listOrganizations{id}}", {}, "The mutation operation is not supported by the schema."),
        (SAMPLE_QUERY, {}, "Variable '$org' has invalid value: Expected a value of non-null type 'OrgFilter!'"),
        (SAMPLE_QUERY, {"org": {"orgId": 7, "extra": True}}, "String cannot represent a non string value: 7"),
    ],
)
async def test_invalid_document_gets_errors_without_data(service: InsightsService, query: str, variables: dict, message: str) -> None:
    """Parse, validation and variable errors return 200 with located errors and no data key."""
    status, body = await run(service, query, **variables)

    assert status == 200
    assert "data" not in body
    assert any(message in error["message"] for error in body["errors"]), body
    assert all(error["locations"] for error in body["errors"])


async def test_operation_name_selects_operation(service: InsightsService) -> None:
    """operationName picks one operation of a document with several."""
    query = "query A {listOrganizations{handle}} query B {listOrganizations{name}}"

    status, body = await service.execute({"query": query, "operationName": "B"})

    assert status == 200
    assert body == {"data": {"listOrganizations": [{"name": "Acme Corporation"}]}}


async def test_introspection_lists_every_query_field(service: InsightsService) -> None:
    """Introspection works, so GraphiQL can show the documentation pane and autocomplete."""
    query = '{__schema{queryType{fields{name}}} __type(name: "API"){fields{name}}}'

    data = await data_of(service, query)

    names = {field["name"] for field in data["__schema"]["queryType"]["fields"]}
    assert len(names) == 40
    assert {"listEnvironments", "getTaskExecutionStats", "getAutomationExecutionTrend"} <= names
    assert "displayName" in {field["name"] for field in data["__type"]["fields"]}


async def test_resolver_bug_is_logged_not_exposed(
    service: InsightsService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in a resolver is logged and reported as a generic error."""
    from proxy.standin.insights import usage

    def explode(*args: Any) -> Any:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(usage, "parse_time_filter", explode)
    query = "query($t: TimeFilter!, $d: DataFilter!){getTotalTraffic(filter: $t, dataFilter: $d)}"

    with caplog.at_level(logging.ERROR, logger="proxy.standin.insights.registry"):
        status, body = await run(service, query, t=WEEK, d=ALL_ENVIRONMENTS)

    assert status == 200
    assert body["data"] == {"getTotalTraffic": None}
    assert "internal detail" not in body["errors"][0]["message"]
    assert "Internal error while resolving getTotalTraffic" in body["errors"][0]["message"]
    assert any("getTotalTraffic" in record.getMessage() for record in caplog.records)
