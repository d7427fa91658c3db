"""Measurements: wrk rows run in alternating pairs, the dashboard burst and the memory check."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from . import procs, wrk


class CallCounter(Protocol):
    def calls(self) -> int: ...


class JsonCallCounter:
    """Read the call counter of the delayed upstream (bench/upstream.py)."""

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/_bench/stats"

    def calls(self) -> int:
        with urllib.request.urlopen(self._url, timeout=5) as response:
            return int(json.load(response)["calls"])


@dataclass
class Row:
    """One line of the results table: a server, the bodies it gets and its measured runs."""

    key: str
    label: str
    server: str
    connections: int
    url: str = ""
    pid: int | None = None
    bodies: Path | None = None
    upstream: CallCounter | None = None
    status: str = "ok"
    runs: list[dict] = field(default_factory=list)

    def ready(self) -> bool:
        return self.status == "ok"

    def not_run(self, reason: str) -> None:
        self.status = f"not run: {reason}"


@dataclass(frozen=True)
class LoadSettings:
    duration_s: float
    warmup_s: float
    rounds: int
    wrk_binary: str
    server_cpu: int | None
    load_cpu: int | None


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# A run is disturbed when processes the benchmark did not start used more than this many cores'
# worth of CPU time on the two benchmark cores together.
DISTURBED_OTHER_CORES = 0.10
# Requests in flight when wrk stops still reach the upstream afterwards. The harness waits this
# long before it reads the upstream's counter, so they do not count in the next row's calls.
SETTLE_S = 0.5


def _own_cpu_seconds() -> float:
    """Return the CPU seconds of this harness, its live descendants and its reaped children (wrk)."""
    live = sum(procs.cpu_seconds(os.getpid()).values())
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return live + reaped.ru_utime + reaped.ru_stime


def measure(row: Row, load: LoadSettings, duration_s: float) -> dict:
    """Run wrk against `row` once and return throughput, latency and the server's CPU per request."""
    assert row.pid is not None and row.bodies is not None

    calls_before = row.upstream.calls() if row.upstream else None
    cores = {role: core for role, core in (("server", load.server_cpu), ("load", load.load_cpu)) if core is not None}
    cpu_before = procs.cpu_seconds(row.pid)
    own_before = _own_cpu_seconds()
    cores_before = {role: procs.core_times(core) for role, core in cores.items()}
    result = wrk.run(
        load.wrk_binary,
        row.url,
        row.bodies,
        connections=row.connections,
        duration_s=duration_s,
        cpu=load.load_cpu,
    )
    cpu_after = procs.cpu_seconds(row.pid)
    own_after = _own_cpu_seconds()
    cores_after = {role: procs.core_times(core) for role, core in cores.items()}

    cpu_s = procs.cpu_seconds_between(cpu_before, cpu_after)
    run = {
        "requests": result.requests,
        "duration_s": round(result.duration_s, 3),
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "errors": result.errors,
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_request": round(cpu_s / result.requests * 1e6, 2) if result.requests else None,
        # Share of one core charged to the server's processes.
        "server_process_share": round(cpu_s / result.duration_s, 3) if result.duration_s else None,
    }
    for role in cores:
        # Busy share of the core, interrupts included: near 1.0 on the server core means the server
        # was the bottleneck, near 1.0 on the load core means wrk or the upstream may have been.
        busy = procs.core_busy_between(cores_before[role], cores_after[role])
        run[f"{role}_core_busy"] = round(busy, 3) if busy is not None else None
    if len(cores) == 2 and result.duration_s and result.requests:
        ticks = procs.CLOCK_TICKS_PER_SECOND
        process_s = sum(cores_after[role].processes - cores_before[role].processes for role in cores) / ticks
        interrupt_s = sum(cores_after[role].interrupts - cores_before[role].interrupts for role in cores) / ticks
        # Cores' worth of process CPU on the two benchmark cores that no process of this run used.
        other = (process_s - (own_after - own_before)) / result.duration_s
        run["other_cores"] = round(max(0.0, other), 3)
        run["disturbed"] = other > DISTURBED_OTHER_CORES
        # Interrupt time on both cores, mostly the loopback receive path of all hops of the row.
        run["interrupt_us_per_request"] = round(interrupt_s / result.requests * 1e6, 2)
    if row.upstream:
        time.sleep(SETTLE_S)
        run["upstream_calls"] = row.upstream.calls() - calls_before
    return run


def run_pairs(pairs: list[tuple[Row, ...]], load: LoadSettings) -> None:
    """Warm every row up, then measure each pair (or group) `rounds` times, reversing the order every other round."""
    for pair in pairs:
        for row in pair:
            if row.ready() and load.warmup_s > 0:
                progress(f"warm-up {row.label} ({load.warmup_s:g} s)")
                try:
                    measure(row, load, load.warmup_s)
                except (wrk.WrkFailed, OSError) as exc:
                    row.status = f"failed: warm-up: {exc}"
    for round_index in range(load.rounds):
        for pair in pairs:
            order = pair if round_index % 2 == 0 else pair[::-1]
            for row in order:
                if not row.ready():
                    continue
                try:
                    run = measure(row, load, load.duration_s)
                except (wrk.WrkFailed, OSError) as exc:
                    row.runs.append({"error": str(exc)})
                    progress(f"round {round_index + 1}/{load.rounds} {row.label}: failed: {exc}")
                    continue
                row.runs.append(run)
                progress(
                    f"round {round_index + 1}/{load.rounds} {row.label}: {run['rps']:.0f} rps, "
                    f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                    f"{run['cpu_us_per_request']} us CPU/request, server core busy {run.get('server_core_busy')}, "
                    f"load core busy {run.get('load_core_busy')}, other processes {run.get('other_cores')} cores"
                    + (" (disturbed)" if run.get("disturbed") else "")
                )


# --- dashboard burst ---------------------------------------------------------------------


@dataclass(frozen=True)
class BurstPlan:
    """Timing of the dashboard burst: `bursts` refreshes `interval_s` apart.

    The cache TTL makes exactly `bursts_per_window` bursts share one cache window. The expiry
    falls 0.6 intervals after the start of a window's last burst and 0.4 intervals before the
    next window's first burst, so no burst races the expiry and the expected calls are exact.
    """

    clients: int
    bursts: int
    interval_s: float
    bursts_per_window: int

    @property
    def ttl_s(self) -> float:
        return round((self.bursts_per_window - 0.4) * self.interval_s, 2)

    @property
    def windows(self) -> int:
        return -(-self.bursts // self.bursts_per_window)


def cache_status_kind(header: str | None) -> str:
    """Return a Cache-Status value without the proxy name and the ttl, e.g. "hit" or "fwd=miss; stored"."""
    if not header:
        return "none"
    params = [part.strip() for part in header.split(";")[1:]]
    return "; ".join(part for part in params if part and not part.startswith("ttl=")) or "none"


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, str]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status, cache_status_kind(response.headers.get("Cache-Status"))


async def _run_bursts(url: str, bodies: list[bytes], plan: BurstPlan, upstream: CallCounter) -> list[dict]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=plan.clients)
    loop = asyncio.get_running_loop()
    results = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time()
        for index in range(plan.bursts):
            await asyncio.sleep(max(0.0, start + index * plan.interval_s - loop.time()))
            calls_before = await asyncio.to_thread(upstream.calls)
            began = loop.time()
            requests = [_post(session, url, body) for _ in range(plan.clients) for body in bodies]
            answers = await asyncio.gather(*requests, return_exceptions=True)
            ended = loop.time()
            calls_after = await asyncio.to_thread(upstream.calls)
            statuses: Counter[str] = Counter()
            cache: Counter[str] = Counter()
            for answer in answers:
                if isinstance(answer, BaseException):
                    statuses[type(answer).__name__] += 1
                    continue
                statuses[str(answer[0])] += 1
                cache[answer[1]] += 1
            opens_window = index % plan.bursts_per_window == 0
            results.append({
                "burst": index + 1,
                "started_s": round(began - start, 3),
                "took_s": round(ended - began, 3),
                "requests": len(requests),
                "statuses": dict(statuses),
                "cache_status": dict(cache),
                "upstream_calls": calls_after - calls_before,
                "expected_upstream_calls": len(bodies) if opens_window else 0,
            })
            progress(
                f"burst {index + 1}/{plan.bursts}: {len(requests)} requests in {ended - began:.2f} s, "
                f"{calls_after - calls_before} upstream calls, statuses {dict(statuses)}"
            )
    return results


def run_burst(url: str, bodies: list[bytes], plan: BurstPlan, upstream: CallCounter) -> list[dict]:
    """Send `plan.bursts` refreshes of `plan.clients` dashboards, each asking every body at once."""
    return asyncio.run(_run_bursts(url, bodies, plan, upstream))


# --- memory ------------------------------------------------------------------------------


async def _send_distinct(url: str, bodies: list[bytes], concurrency: int, deadline_s: float) -> Counter[str]:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    statuses: Counter[str] = Counter()
    queue = iter(bodies)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + deadline_s

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            if loop.time() > stop_at:
                statuses["not sent: time limit"] += 1
                continue
            try:
                status, _ = await _post(session, url, body)
                statuses[str(status)] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


def send_distinct(url: str, bodies: list[bytes], concurrency: int, deadline_s: float) -> dict[str, int]:
    """POST every body once with `concurrency` connections; stop sending after `deadline_s` seconds."""
    began = time.monotonic()
    statuses = asyncio.run(_send_distinct(url, bodies, concurrency, deadline_s))
    progress(f"sent {len(bodies)} distinct queries in {time.monotonic() - began:.1f} s: {dict(statuses)}")
    return dict(statuses)
