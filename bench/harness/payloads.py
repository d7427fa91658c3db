"""Request and response bodies shaped like Choreo Insights traffic.

The upstream body is a `getAPIUsageOverTime` response of about 2 KB. The request bodies are
the queries of a 12-panel API dashboard, written against the documented Insights schema, so the
proxy parses and normalizes realistic documents.
"""

from __future__ import annotations

import json
from pathlib import Path

ORG_ID = "5c7a1b2e-9d3f-4e8a-b6c1-0f2d3e4a5b6c"
ENVIRONMENT_ID = "f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
API_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
RESPONSE_TARGET_BYTES = 2048
SECONDS_PER_DAY = 86_400

_DATA_FILTER = {"orgId": ORG_ID, "environmentId": ENVIRONMENT_ID, "tenant": "carbon.super"}
_TIME_FILTER = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}

# The 12 panels of one dashboard: (operation name, document). Every document takes the same
# variables, $time and $data, as a Grafana dashboard with a shared time picker would send.
DASHBOARD_QUERIES: tuple[tuple[str, str], ...] = (
    ("TotalTraffic", "getTotalTraffic(filter: $time, dataFilter: $data)"),
    ("TotalErrors", "getTotalErrors(filter: $time, dataFilter: $data)"),
    ("OverallLatency", "getOverallLatency(filter: $time, dataFilter: $data)"),
    (
        "LatencySummary",
        "getLatencySummary(filter: $time, dataFilter: $data) { granularity summary { timeSpan latencyTime } }",
    ),
    (
        "SuccessSummary",
        "getSuccessSummary(filter: $time, dataFilter: $data) { granularity summary { timeSpan requestCount } }",
    ),
    (
        "ErrorSummary",
        "getErrorSummary(filter: $time, dataFilter: $data) { granularity summary { timeSpan errorCount } }",
    ),
    (
        "ApiUsage",
        "getAPIUsageOverTime(timeFilter: $time, dataFilter: $data) { apiId granularity usage { timeSpan count } }",
    ),
    ("SlowestApis", "topSlowestAPIs(filter: $time, dataFilter: $data, limit: 5) { apiId latency }"),
    (
        "ErrorsByCategory",
        "getErrorsByCategory(timeFilter: $time, dataFilter: $data) "
        "{ granularity errors { timeSpan auth targetConnectivity throttled other } }",
    ),
    ("TopPlatforms", "getTopPlatforms(timeFilter: $time, dataFilter: $data) { platform count }"),
    ("TopUserAgents", "getTopUserAgents(timeFilter: $time, dataFilter: $data) { userAgent count }"),
    (
        "UsageByApp",
        "getAPIUsageByAppOverTime(timeFilter: $time, dataFilter: $data) "
        "{ granularity usage { applicationId applicationName usage { timeSpan count } } }",
    ),
)


def _document(operation: str, selection: str) -> str:
    return f"query {operation}($time: TimeFilter!, $data: DataFilter!) {{ {selection} }}"


def dashboard_bodies() -> list[bytes]:
    """Return the 12 distinct POST bodies of one dashboard refresh."""
    bodies = []
    for operation, selection in DASHBOARD_QUERIES:
        payload = {
            "query": _document(operation, selection),
            "operationName": operation,
            "variables": {"time": _TIME_FILTER, "data": _DATA_FILTER},
        }
        bodies.append(json.dumps(payload, separators=(",", ":")).encode())
    return bodies


def usage_body(window_start: str) -> bytes:
    """Return the API-usage panel query for a time window starting at `window_start`."""
    operation, selection = DASHBOARD_QUERIES[6]
    payload = {
        "query": _document(operation, selection),
        "operationName": operation,
        "variables": {"time": {"from": window_start, "to": "2026-11-02T00:00:00Z"}, "data": _DATA_FILTER},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def distinct_bodies(count: int) -> list[bytes]:
    """Return `count` usage queries that differ only in their start time, one second apart."""
    if count > SECONDS_PER_DAY:
        raise ValueError(f"at most {SECONDS_PER_DAY} distinct bodies fit in one day of start times, got {count}")
    return [usage_body(f"2026-11-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(count)]


def response_body() -> bytes:
    """Return the upstream's response body: hourly usage buckets of one API, padded to about 2 KB."""
    usage = []
    body = b""
    hour = 0
    while len(body) < RESPONSE_TARGET_BYTES:
        usage.append({"timeSpan": f"2026-11-01T{hour % 24:02d}:00:00.0000000+00:00", "count": 1000 + 37 * hour})
        hour += 1
        answer = {"data": {"getAPIUsageOverTime": [{"apiId": API_ID, "granularity": "hour", "usage": usage}]}}
        body = json.dumps(answer, separators=(",", ":")).encode()
    return body


def write_lines(path: Path, lines: list[bytes] | list[str]) -> Path:
    """Write one body per line, the format the wrk script reads."""
    text = "\n".join(line.decode() if isinstance(line, bytes) else line for line in lines)
    path.write_text(text + "\n")
    return path
