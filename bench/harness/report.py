"""Medians, proxy-to-nginx ratios, target checks, and the JSON and Markdown result files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .scenarios import Row

MB = 1_000_000  # Memory is reported in decimal megabytes, the stricter reading of "80 MB".

MEDIAN_FIELDS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cpu_us_per_request",
    "interrupt_us_per_request",
    "server_process_share",
    "server_core_busy",
    "load_core_busy",
    "other_cores",
)


def summarize_row(row: Row) -> dict:
    """Return the row as JSON data with the median of each field over its successful runs.

    Runs that other processes disturbed are left out of the medians, unless every run was.
    """
    good = [run for run in row.runs if "error" not in run]
    if row.ready() and not good:
        row.status = "failed: " + (row.runs[-1]["error"] if row.runs else "no run completed")
    undisturbed = [run for run in good if not run.get("disturbed")]
    used = undisturbed or good
    median = {}
    for name in MEDIAN_FIELDS:
        values = [run[name] for run in used if run.get(name) is not None]
        median[name] = round(statistics.median(values), 3) if values else None
    failed = sum(sum(run["errors"].values()) for run in good)
    return {
        "key": row.key,
        "label": row.label,
        "server": row.server,
        "connections": row.connections,
        "status": row.status,
        "median": median,
        "runs_used": len(used),
        "runs_measured": len(good),
        "all_runs_disturbed": bool(good) and not undisturbed,
        "failed_requests": failed,
        "runs": row.runs,
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def pair_ratios(label: str, reference: dict, candidate: dict) -> dict:
    """Return the proxy row's rps and CPU/request as multiples of its nginx row."""
    return {
        "label": label,
        "reference": reference["key"],
        "candidate": candidate["key"],
        "rps_ratio": _ratio(candidate["median"]["rps"], reference["median"]["rps"]),
        "cpu_per_request_ratio": _ratio(
            candidate["median"]["cpu_us_per_request"], reference["median"]["cpu_us_per_request"]
        ),
    }


def _target(name: str, measured: float | None, limit: float, *, at_least: bool, unit: str = "", rows=()) -> dict:
    """Return one target check; any row with failed requests or not run makes the check not pass."""
    not_run = [row for row in rows if row["status"] != "ok"]
    failed = [row for row in rows if row["failed_requests"]]
    if not_run or measured is None:
        passed, note = None, "; ".join(f"{row['label']}: {row['status']}" for row in not_run) or "no data"
    elif failed:
        passed = False
        note = "; ".join(f"{row['label']}: {row['failed_requests']} failed requests" for row in failed)
    else:
        passed, note = (measured >= limit if at_least else measured <= limit), ""
    disturbed = [row["label"] for row in rows if row.get("all_runs_disturbed")]
    if disturbed and passed is not None:
        note = "; ".join(filter(None, [note, f"every run of {', '.join(disturbed)} was disturbed by other processes"]))
    return {
        "target": name,
        "measured": measured,
        "limit": f"{'≥' if at_least else '≤'} {limit:g}{unit}",
        "pass": passed,
        "note": note,
    }


def throughput_targets(rows: dict[str, dict], ratios: dict[str, dict]) -> list[dict]:
    hit_rows = (rows["nginx_cache"], rows["proxy_cache_hit"])
    off_rows = (rows["nginx_proxy"], rows["proxy_cache_off"])
    hit, off = ratios["cache_hit"], ratios["cache_off"]
    return [
        _target("cache hit rps / nginx proxy_cache rps", hit["rps_ratio"], 0.4, at_least=True, unit="×", rows=hit_rows),
        _target(
            "cache hit CPU/request / nginx proxy_cache CPU/request",
            hit["cpu_per_request_ratio"],
            2.5,
            at_least=False,
            unit="×",
            rows=hit_rows,
        ),
        _target("cache off rps / nginx proxy rps", off["rps_ratio"], 0.12, at_least=True, unit="×", rows=off_rows),
        _target(
            "cache off CPU/request / nginx proxy CPU/request",
            off["cpu_per_request_ratio"],
            8,
            at_least=False,
            unit="×",
            rows=off_rows,
        ),
    ]


def latency_added(direct: dict, proxied: dict) -> dict:
    """Return what the proxy adds to the median p50 and p99 of calling the upstream directly."""
    added = {}
    for name in ("p50_ms", "p99_ms"):
        base, through = direct["median"][name], proxied["median"][name]
        added[name] = round(through - base, 3) if base is not None and through is not None else None
    return added


def latency_targets(direct: dict, proxied: dict, added: dict) -> list[dict]:
    rows = (direct, proxied)
    return [
        _target("added p50 latency, 50 ms upstream, 16 connections", added["p50_ms"], 1, at_least=False, unit=" ms", rows=rows),
        _target("added p99 latency, 50 ms upstream, 16 connections", added["p99_ms"], 5, at_least=False, unit=" ms", rows=rows),
    ]


def _count_target(name: str, measured: int | None, expected: int, status: str, note: str = "") -> dict:
    passed = None if status != "ok" or measured is None else measured == expected
    return {
        "target": name,
        "measured": measured,
        "limit": f"= {expected}",
        "pass": passed,
        "note": note if status == "ok" else status,
    }


def burst_targets(burst: dict) -> list[dict]:
    status = burst.get("status", "not run")
    bursts = burst.get("bursts", [])
    mismatched = [b["burst"] for b in bursts if b["upstream_calls"] != b["expected_upstream_calls"]]
    failed = sum(count for b in bursts for code, count in b["statuses"].items() if code != "200")
    note = ""
    if mismatched:
        note = f"bursts {mismatched} differ from the expected calls"
    if failed:
        note = (note + "; " if note else "") + f"{failed} requests did not get 200"
    calls = burst.get("upstream_calls")
    calls_target = _count_target(
        "burst: upstream calls (one per distinct query per cache window)",
        calls,
        burst.get("expected_upstream_calls", 0),
        status,
        note,
    )
    if calls_target["pass"] and (mismatched or failed):
        calls_target["pass"] = False
    token_target = _count_target(
        "burst: token requests (one per token lifetime)",
        burst.get("token_requests"),
        burst.get("expected_token_requests", 1),
        status,
    )
    return [calls_target, token_target]


def memory_targets(memory: dict) -> list[dict]:
    status = memory.get("status", "not run")
    idle = memory.get("idle_rss_bytes")
    growth = memory.get("growth_bytes")
    max_bytes = memory.get("cache_max_bytes", 0)
    growth_limit = (max_bytes + 20 * MB) / MB
    failed = sum(count for code, count in memory.get("statuses", {}).items() if code != "200")
    targets = [
        _memory_target("idle RSS", idle, 80, status),
        _memory_target(f"RSS growth after {memory.get('requests', 0)} distinct queries", growth, growth_limit, status),
    ]
    if failed and targets[1]["pass"]:
        targets[1]["pass"] = False
        targets[1]["note"] = f"{failed} requests did not get 200"
    return targets


def _memory_target(name: str, value: int | None, limit_mb: float, status: str) -> dict:
    if status != "ok" or value is None:
        return {"target": name, "measured": None, "limit": f"≤ {limit_mb:g} MB", "pass": None, "note": status}
    measured = round(value / MB, 1)
    return {"target": name, "measured": measured, "limit": f"≤ {limit_mb:g} MB", "pass": measured <= limit_mb, "note": ""}


# --- files -------------------------------------------------------------------------------


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _measured(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "not run"}[passed]


def rows_table(rows: list[dict]) -> list[str]:
    lines = [
        "| row | requests/s | p50 ms | p99 ms | CPU µs/request | server core busy | load core busy | other processes "
        "| runs used | failed requests | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        median = row["median"]
        lines.append(
            f"| {row['label']} | {_cell(median['rps'], 0)} | {_cell(median['p50_ms'])} | {_cell(median['p99_ms'])} | "
            f"{_cell(median['cpu_us_per_request'], 1)} | {_cell(median['server_core_busy'])} | "
            f"{_cell(median['load_core_busy'])} | {_cell(median['other_cores'])} | "
            f"{row['runs_used']} of {row['runs_measured']} | "
            f"{_cell(row['failed_requests'])} | {row['status']} |"
        )
    return lines


def targets_table(targets: list[dict]) -> list[str]:
    lines = ["| target | measured | limit | result | note |", "|---|---:|---|---|---|"]
    for target in targets:
        lines.append(
            f"| {target['target']} | {_measured(target['measured'])} | {target['limit']} | "
            f"{_verdict(target['pass'])} | {target['note']} |"
        )
    return lines


def render_markdown(results: dict) -> str:
    """Render the results as the Markdown page latest.md."""
    lines = _header_lines(results)
    lines += _throughput_lines(results)
    lines += _latency_lines(results["latency"])
    lines += ["", "## Dashboard burst", "", *_burst_lines(results["burst"])]
    lines += ["", "## Memory", "", *_memory_lines(results["memory"])]
    lines += ["", "## Targets", "", *targets_table(results["targets"]), ""]
    if results.get("profile"):
        lines += ["## Profile", ""]
        for key, summary in results["profile"].items():
            lines += _profile_lines(key, summary)
    return "\n".join(lines)


def _header_lines(results: dict) -> list[str]:
    settings = results["settings"]
    machine = results["machine"]
    background = ", ".join(
        f"core {core}: {share:.2f}" for core, share in settings["background_busy_before_start"].items()
    )
    return [
        "# Benchmark results",
        "",
        f"Run {results['started_at']} with `{results['command']}` ({settings['mode']} mode).",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"{machine['os']}, Linux {machine['kernel']}; Python {machine['python']}, nginx {machine['nginx']}, "
        f"wrk {machine['wrk']}, choreo-insights-proxy {machine['proxy']}.",
        *_build_line(machine),
        f"Pinning: {settings['pinning']}. Busy share of each core in the 2 s before the start, from other "
        f"processes: {background}.",
    ]


def _build_line(machine: dict) -> list[str]:
    build = machine.get("python_build")
    if not build:
        return []
    optimizations = "with" if build["enable_optimizations"] else "without"
    return [f"Interpreter: `{build['executable']}`, libpython {build['libpython']}, configured "
            f"{optimizations} `--enable-optimizations`."]


def _throughput_lines(results: dict) -> list[str]:
    settings = results["settings"]
    rounds = f"{settings['rounds']} round{'s' if settings['rounds'] != 1 else ''}"
    lines = [
        "",
        "## Throughput rows",
        "",
        f"Medians of {rounds} of {settings['duration_s']:g} s per row, each pair run alternately after a "
        f"{settings['warmup_s']:g} s warm-up; wrk with 1 thread and {settings['connections']} connections. "
        "CPU is user plus system time of the server's processes (nginx master and worker; the proxy process) "
        "from /proc/PID/stat, divided by the requests wrk completed; the kernel's interrupt time (irq and "
        "softirq, where much of loopback networking runs) is charged to no process and is not in it. Server "
        "core busy and load core busy are the busy shares of core 0 and of the core running wrk and the "
        "upstream, interrupts included, from /proc/stat (near 1.00 on the server core: the server was the "
        "bottleneck). Other processes is the CPU, in cores, that processes the benchmark did not start used "
        "on the two cores during the run. Runs above 0.10 are left out of the medians unless every run of "
        "the row is (runs used).",
        "",
        *rows_table(results["rows"]),
        "",
        "| proxy row / nginx row | requests/s ratio | CPU/request ratio |",
        "|---|---:|---:|",
    ]
    for ratio in results["ratios"]:
        lines.append(f"| {ratio['label']} | {_cell(ratio['rps_ratio'], 3)} | {_cell(ratio['cpu_per_request_ratio'], 3)} |")
    return lines


def _latency_lines(latency: dict) -> list[str]:
    return [
        "",
        f"## Added latency (upstream delay {latency['delay_ms']:g} ms, {latency['connections']} connections)",
        "",
        *rows_table(latency["rows"]),
        "",
        f"Added by the proxy: p50 {_cell(latency['added'].get('p50_ms'), 3)} ms, "
        f"p99 {_cell(latency['added'].get('p99_ms'), 3)} ms; by nginx, for reference: p50 "
        f"{_cell(latency['added_by_nginx'].get('p50_ms'), 3)} ms, p99 {_cell(latency['added_by_nginx'].get('p99_ms'), 3)} ms "
        "(differences of the medians).",
    ]


def _burst_lines(burst: dict) -> list[str]:
    if burst.get("status") != "ok":
        return [f"Status: {burst.get('status', 'not run')}."]
    plan = burst["plan"]
    lines = [
        f"{plan['clients']} clients each ask the {burst['distinct_queries']} queries of one dashboard at once, "
        f"{plan['bursts']} times {plan['interval_s']:g} s apart; cache.ttl_s = {plan['ttl_s']:g}, so "
        f"{plan['bursts_per_window']} bursts share a cache window; upstream delay {burst['delay_ms']:g} ms. "
        f"Upstream calls: {burst['upstream_calls']} (expected {burst['expected_upstream_calls']}); "
        f"token requests: {burst['token_requests']} (expected {burst['expected_token_requests']}).",
        "",
        "| burst | started s | took s | requests | upstream calls | expected | statuses | Cache-Status |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for b in burst["bursts"]:
        statuses = ", ".join(f"{code}: {count}" for code, count in b["statuses"].items())
        cache = ", ".join(f"{kind}: {count}" for kind, count in b["cache_status"].items())
        lines.append(
            f"| {b['burst']} | {b['started_s']:.2f} | {b['took_s']:.2f} | {b['requests']} | {b['upstream_calls']} | "
            f"{b['expected_upstream_calls']} | {statuses} | {cache} |"
        )
    return lines


def _memory_lines(memory: dict) -> list[str]:
    if memory.get("status") != "ok":
        return [f"Status: {memory.get('status', 'not run')}."]
    return [
        f"Proxy with cache.max_bytes = {memory['cache_max_bytes'] / MB:g} MB and cache.max_entries = "
        f"{memory['cache_max_entries']:,}: idle RSS {memory['idle_rss_bytes'] / MB:.1f} MB; after "
        f"{memory['requests']:,} distinct queries ({memory['concurrency']} connections) RSS "
        f"{memory['after_rss_bytes'] / MB:.1f} MB, growth {memory['growth_bytes'] / MB:.1f} MB, peak "
        f"{memory['peak_rss_bytes'] / MB:.1f} MB. Response statuses: "
        f"{', '.join(f'{code}: {count}' for code, count in memory['statuses'].items())}.",
    ]


def write_markdown(results: dict, path: Path) -> None:
    path.write_text(render_markdown(results))


def _profile_lines(key: str, summary: dict) -> list[str]:
    if summary.get("status") != "ok":
        return [f"{key}: {summary.get('status')}", ""]
    lines = [
        f"### {key}",
        "",
        f"`{summary['command']}`, {summary['samples']} samples.",
        "",
        "| self share | function | | inclusive share | function |",
        "|---:|---|---|---:|---|",
    ]
    for own, inclusive in zip(summary["self"], summary["inclusive"]):
        lines.append(
            f"| {own['share']:.1%} | `{own['function']}` | | {inclusive['share']:.1%} | `{inclusive['function']}` |"
        )
    return lines + [""]
