"""Resolvers of the Devant automation queries: getTaskExecutionStats and getAutomationExecutionTrend.

Each scheduled task component runs at fixed minutes (see `AutomationComponent`) in every
environment of the organization. The outcome of a run (success, failure or timeout) is drawn from
the BLAKE2b digest of (organization, environment, component, run minute), so it never changes.
A run counts towards a range when its start lies in the range and before the current minute.
Failures include timeouts: ``failureCount`` and ``errorCount`` are failed plus timed-out runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from proxy.standin.insights.arguments import id_set
from proxy.standin.insights.context import QueryContext
from proxy.standin.insights.fixture import AutomationComponent, Environment
from proxy.standin.insights.registry import resolver
from proxy.standin.insights.timerange import MINUTE, format_timestamp, parse_time_filter, resolve_granularity
from proxy.standin.insights.traffic import hash_bytes

SUCCEEDED, FAILED, TIMED_OUT = "SUCCEEDED", "FAILED", "TIMED_OUT"


def run_outcome(context: QueryContext, environment: Environment, component: AutomationComponent, run_minute: int) -> str:
    draw = hash_bytes(context.organization.uuid, environment.id, component.id, run_minute, length=2)
    chance = int.from_bytes(draw, "big") / 65536
    if chance < component.failure_rate:
        return FAILED
    if chance < component.failure_rate + component.timeout_rate:
        return TIMED_OUT
    return SUCCEEDED


def runs(
    context: QueryContext, environment: Environment, component: AutomationComponent, start: int, end: int
) -> Iterator[tuple[int, str]]:
    """Yield (start in Unix seconds, outcome) of the component's runs in ``[start, end)``."""
    start, end = context.clip(start, end)
    interval = component.interval_minutes
    first_minute = -(-start // MINUTE)
    first_minute += (component.start_minute - first_minute) % interval
    for run_minute in range(first_minute, -(-end // MINUTE), interval):
        yield run_minute * MINUTE, run_outcome(context, environment, component, run_minute)


def _selected(
    context: QueryContext, data_filter: Mapping[str, Any], automation_filter: Mapping[str, Any] | None
) -> list[tuple[Environment, AutomationComponent]]:
    scope = context.scope(data_filter)
    component_ids = id_set((automation_filter or {}).get("componentIDs"))
    project_id = data_filter.get("projectId")
    return [
        (environment, component)
        for component in context.organization.automations
        if (component_ids is None or component.id in component_ids)
        and (project_id is None or component.project_id == project_id)
        for environment in scope.environments
    ]


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


@resolver("getTaskExecutionStats")
def get_task_execution_stats(
    context: QueryContext,
    dataFilter: Mapping[str, Any],
    timeFilter: Mapping[str, Any],
    automationFilter: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    time_range = parse_time_filter(timeFilter, "timeFilter")
    counts = {SUCCEEDED: 0, FAILED: 0, TIMED_OUT: 0}
    for environment, component in _selected(context, dataFilter, automationFilter):
        for _, outcome in runs(context, environment, component, time_range.start, time_range.end):
            counts[outcome] += 1
    total = sum(counts.values())
    errors = counts[FAILED] + counts[TIMED_OUT]
    return {
        "totalExecutions": total,
        "successfulJobs": counts[SUCCEEDED],
        "failedJobs": counts[FAILED],
        "timeoutJobs": counts[TIMED_OUT],
        "errorCount": errors,
        "errorRatePercent": _percent(errors, total),
        "successRatePercent": _percent(counts[SUCCEEDED], total),
    }


@resolver("getAutomationExecutionTrend")
def get_automation_execution_trend(
    context: QueryContext,
    dataFilter: Mapping[str, Any],
    timeFilter: Mapping[str, Any],
    automationFilter: Mapping[str, Any] | None = None,
    interval: str | None = None,
) -> list[dict[str, Any]]:
    time_range = parse_time_filter(timeFilter, "timeFilter")
    granularity = resolve_granularity(interval, time_range, "interval")
    by_bucket: dict[int, list[int]] = {}
    for environment, component in _selected(context, dataFilter, automationFilter):
        for run_start, outcome in runs(context, environment, component, time_range.start, time_range.end):
            bucket = by_bucket.setdefault(granularity.bucket_start(run_start), [0, 0])
            bucket[0 if outcome == SUCCEEDED else 1] += 1
    return [
        {
            "timestamp": format_timestamp(bucket_start, time_range.offset),
            "totalCount": succeeded + failed,
            "successCount": succeeded,
            "failureCount": failed,
        }
        for bucket_start, (succeeded, failed) in sorted(by_bucket.items())
    ]
