"""The benchmark's phases: throughput rows, added latency, dashboard burst and memory.

Each phase starts the servers it needs, measures, and stops them again; a phase that cannot run
records why instead of numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx, payloads, procs, profile, proxy, scenarios, wrk
from .scenarios import BurstPlan, LoadSettings, Row, progress

LATENCY_DELAY_MS = 50.0
LATENCY_CONNECTIONS = 16
DISTINCT_POOL = 1000  # bodies cycled by the cache-off rows, far more than the connections in flight
MEMORY_CONCURRENCY = 16


@dataclass
class Context:
    """Shared state of the phases: the process group, binaries, cores, run settings and started servers."""

    group: procs.ProcessGroup
    work_dir: Path
    nginx_binary: str
    load: LoadSettings
    connections: int
    server_cpu: int | None
    proxy_log_level: str
    proxy_unavailable: str | None
    standin: proxy.StandIn | None = None
    static_upstream_port: int | None = None
    static_upstream: nginx.StubStatusCounter | None = None
    delay_upstream_port: int | None = None
    delay_upstream: scenarios.JsonCallCounter | None = None
    children: dict[str, procs.Child] = field(default_factory=dict)

    @property
    def load_cpu(self) -> int | None:
        return self.load.load_cpu

    def ensure_standin(self) -> proxy.StandIn:
        if self.standin is None:
            self.standin = proxy.start_standin(self.group, self.load_cpu)
        return self.standin

    def ensure_static_upstream(self) -> int:
        """Start nginx returning the 2 KB body on the load core, once, and return its port."""
        if self.static_upstream_port is None:
            port = procs.free_port()
            config = nginx.static_upstream_config(self.work_dir / "nginx-upstream", port, payloads.response_body())
            nginx.start(self.group, self.nginx_binary, "nginx-upstream", self.work_dir / "nginx-upstream", config, port, self.load_cpu)
            self.static_upstream_port = port
            self.static_upstream = nginx.StubStatusCounter(port)
        return self.static_upstream_port

    def ensure_delay_upstream(self) -> int:
        """Start bench/upstream.py with the 50 ms delay on the load core, once, and return its port."""
        if self.delay_upstream_port is None:
            port = procs.free_port()
            script = Path(__file__).resolve().parent.parent / "upstream.py"
            argv = procs.python_command(str(script), "--port", str(port), "--delay-ms", f"{LATENCY_DELAY_MS:g}")
            child = self.group.start("delay-upstream", argv, cpu=self.load_cpu)
            procs.wait_for_http(child, f"http://127.0.0.1:{port}/_bench/stats")
            self.children["delay-upstream"] = child
            self.delay_upstream_port = port
            self.delay_upstream = scenarios.JsonCallCounter(port)
        return self.delay_upstream_port

    def start_proxy(self, name: str, upstream_port: int, cache: proxy.CacheSetting) -> proxy.Proxy:
        standin = self.ensure_standin()
        return proxy.start_proxy(
            self.group,
            name,
            self.work_dir,
            standin,
            upstream_port,
            cache,
            cpu=self.server_cpu,
            log_level=self.proxy_log_level,
        )


def _bodies_files(work_dir: Path) -> tuple[Path, Path]:
    same = payloads.write_lines(work_dir / "bodies-same.txt", [payloads.usage_body("2026-11-01T00:00:00Z")])
    distinct = payloads.write_lines(work_dir / "bodies-distinct.txt", payloads.distinct_bodies(DISTINCT_POOL))
    return same, distinct


def throughput_phase(ctx: Context, profile_s: float) -> tuple[list[Row], dict]:
    """Measure nginx and the proxy as plain proxies (distinct queries) and as caches (one query)."""
    progress("throughput rows: starting nginx upstream and reference proxies")
    same, distinct = _bodies_files(ctx.work_dir)
    upstream_port = ctx.ensure_static_upstream()
    counter = ctx.static_upstream
    rows = {
        "nginx_proxy": Row("nginx_proxy", "nginx proxy", "nginx", ctx.connections, bodies=distinct, upstream=counter),
        "proxy_cache_off": Row("proxy_cache_off", "proxy, cache off", "proxy", ctx.connections, bodies=distinct, upstream=counter),
        "nginx_cache": Row("nginx_cache", "nginx proxy_cache", "nginx", ctx.connections, bodies=same, upstream=counter),
        "proxy_cache_hit": Row("proxy_cache_hit", "proxy, cache hits", "proxy", ctx.connections, bodies=same, upstream=counter),
    }
    started: list[procs.Child] = []
    for key, cache in (("nginx_proxy", False), ("nginx_cache", True)):
        port = procs.free_port()
        prefix = ctx.work_dir / key.replace("_", "-")
        config = nginx.proxy_config(prefix, port, upstream_port, cache=cache)
        child = nginx.start(ctx.group, ctx.nginx_binary, key, prefix, config, port, ctx.server_cpu)
        started.append(child)
        rows[key].url, rows[key].pid = f"http://127.0.0.1:{port}/query-api", child.pid
    proxy_settings = {
        # ttl_s = 0 stores nothing, and the distinct bodies keep in-flight merging out of the way.
        "proxy_cache_off": proxy.CacheSetting(ttl_s=0),
        "proxy_cache_hit": proxy.CacheSetting(ttl_s=3600),
    }
    for key, cache in proxy_settings.items():
        if ctx.proxy_unavailable:
            rows[key].not_run(ctx.proxy_unavailable)
            continue
        try:
            instance = ctx.start_proxy(key.replace("_", "-"), upstream_port, cache)
        except procs.ProcessFailed as exc:
            rows[key].not_run(str(exc))
            continue
        started.append(instance.child)
        rows[key].url, rows[key].pid = instance.url, instance.child.pid

    scenarios.run_pairs(
        [(rows["nginx_proxy"], rows["proxy_cache_off"]), (rows["nginx_cache"], rows["proxy_cache_hit"])], ctx.load
    )
    profiles = {}
    if profile_s > 0:
        for key in ("proxy_cache_hit", "proxy_cache_off"):
            profiles[key] = profile_row(ctx, rows[key], profile_s)
    for child in reversed(started):
        ctx.group.stop(child)
    return list(rows.values()), profiles


def profile_row(ctx: Context, row: Row, duration_s: float) -> dict:
    """Sample `row`'s proxy with py-spy during one extra wrk run; that run's numbers are not used."""
    if not row.ready():
        return {"status": row.status}
    py_spy = profile.find_py_spy()
    if py_spy is None:
        return {"status": "not run: py-spy is not installed (pip install py-spy)"}
    output = ctx.work_dir / f"profile-{row.key}.txt"
    progress(f"profiling {row.label} with py-spy for {duration_s:g} s")
    child, command = profile.record(ctx.group, py_spy, row.pid, duration_s, output, ctx.load_cpu)
    time.sleep(0.5)
    try:
        scenarios.measure(row, ctx.load, duration_s + 1)
    except (wrk.WrkFailed, OSError) as exc:
        return {"status": f"failed: {exc}"}
    child.process.wait(duration_s + 30)
    if child.process.returncode != 0 or not output.exists():
        return {"status": f"failed: py-spy exited with {child.process.returncode}: {child.log_tail(5)}"}
    command[command.index("--pid") + 1] = "<proxy pid>"
    return {"status": "ok", "command": " ".join(command), "raw_file": str(output), **profile.summarize(output)}


def latency_phase(ctx: Context) -> tuple[list[Row], dict]:
    """Compare calling the 50 ms upstream directly, through nginx, and through the proxy (cache off)."""
    progress(f"added latency: upstream delay {LATENCY_DELAY_MS:g} ms, {LATENCY_CONNECTIONS} connections")
    _, distinct = _bodies_files(ctx.work_dir)
    port = ctx.ensure_delay_upstream()
    counter = ctx.delay_upstream
    direct = Row("upstream_direct", "upstream directly", "upstream", LATENCY_CONNECTIONS, bodies=distinct, upstream=counter)
    via_nginx = Row("nginx_latency", "through nginx", "nginx", LATENCY_CONNECTIONS, bodies=distinct, upstream=counter)
    proxied = Row("proxy_latency", "through the proxy, cache off", "proxy", LATENCY_CONNECTIONS, bodies=distinct, upstream=counter)
    direct.url = f"http://127.0.0.1:{port}{nginx.UPSTREAM_PATH}"
    direct.pid = ctx.children["delay-upstream"].pid

    started = []
    nginx_port = procs.free_port()
    prefix = ctx.work_dir / "nginx-latency"
    config = nginx.proxy_config(prefix, nginx_port, port, cache=False)
    started.append(nginx.start(ctx.group, ctx.nginx_binary, "nginx-latency", prefix, config, nginx_port, ctx.server_cpu))
    via_nginx.url, via_nginx.pid = f"http://127.0.0.1:{nginx_port}/query-api", started[-1].pid
    if ctx.proxy_unavailable:
        proxied.not_run(ctx.proxy_unavailable)
    else:
        try:
            instance = ctx.start_proxy("proxy-latency", port, proxy.CacheSetting(ttl_s=0))
            started.append(instance.child)
            proxied.url, proxied.pid = instance.url, instance.child.pid
        except procs.ProcessFailed as exc:
            proxied.not_run(str(exc))

    scenarios.run_pairs([(direct, via_nginx, proxied)], ctx.load)
    for child in reversed(started):
        ctx.group.stop(child)
    return [direct, via_nginx, proxied], {"delay_ms": LATENCY_DELAY_MS, "connections": LATENCY_CONNECTIONS}


def burst_phase(ctx: Context, plan: BurstPlan) -> dict:
    """Send dashboard bursts through a fresh proxy and count upstream calls and token requests."""
    bodies = payloads.dashboard_bodies()
    result: dict = {
        "plan": {**plan.__dict__, "ttl_s": plan.ttl_s},
        "delay_ms": LATENCY_DELAY_MS,
        "distinct_queries": len(bodies),
        "expected_upstream_calls": len(bodies) * plan.windows,
        # The stand-in's tokens live an hour, far longer than the bursts, so one request suffices.
        "expected_token_requests": 1,
        "token_lifetime_s": proxy.TOKEN_LIFETIME_S,
    }
    if ctx.proxy_unavailable:
        return {**result, "status": f"not run: {ctx.proxy_unavailable}"}
    progress(f"dashboard burst: {plan.clients} clients x {len(bodies)} queries, {plan.bursts} bursts")
    port = ctx.ensure_delay_upstream()
    try:
        standin = ctx.ensure_standin()
        tokens_before = standin.token_requests()
        calls_before = ctx.delay_upstream.calls()
        instance = ctx.start_proxy("proxy-burst", port, proxy.CacheSetting(ttl_s=plan.ttl_s))
    except (procs.ProcessFailed, OSError) as exc:
        return {**result, "status": f"not run: {exc}"}
    try:
        bursts = scenarios.run_burst(instance.url, bodies, plan, ctx.delay_upstream)
        upstream_calls = ctx.delay_upstream.calls() - calls_before
        token_requests = standin.token_requests() - tokens_before
    except OSError as exc:
        return {**result, "status": f"failed: {exc}"}
    finally:
        ctx.group.stop(instance.child)
    return {
        **result,
        "status": "ok",
        "bursts": bursts,
        "upstream_calls": upstream_calls,
        "token_requests": token_requests,
    }


def memory_phase(ctx: Context, requests: int, max_bytes: int, deadline_s: float) -> dict:
    """Measure the proxy's RSS at idle and after `requests` distinct queries fill its cache."""
    result: dict = {"requests": requests, "cache_max_bytes": max_bytes, "concurrency": MEMORY_CONCURRENCY}
    if ctx.proxy_unavailable:
        return {**result, "status": f"not run: {ctx.proxy_unavailable}"}
    progress(f"memory: {requests} distinct queries, cache.max_bytes = {max_bytes}")
    port = ctx.ensure_static_upstream()
    # max_entries is set high so that max_bytes is the limit that binds.
    cache = proxy.CacheSetting(ttl_s=3600, max_entries=1_000_000, max_bytes=max_bytes)
    try:
        instance = ctx.start_proxy("proxy-memory", port, cache)
    except procs.ProcessFailed as exc:
        return {**result, "status": f"not run: {exc}"}
    pid = instance.child.pid
    try:
        # One request first, so the token and lazily imported modules count as idle state.
        scenarios.send_distinct(instance.url, [payloads.usage_body("2026-10-31T00:00:00Z")], 1, 30)
        time.sleep(1)
        idle = procs.resident_bytes(pid)
        statuses = scenarios.send_distinct(
            instance.url, payloads.distinct_bodies(requests), MEMORY_CONCURRENCY, deadline_s
        )
        time.sleep(1)
        after = procs.resident_bytes(pid)
        peak = procs.peak_resident_bytes(pid)
    except OSError as exc:
        return {**result, "status": f"failed: {exc}"}
    finally:
        ctx.group.stop(instance.child)
    return {
        **result,
        "status": "ok",
        "cache_max_entries": cache.max_entries,
        "idle_rss_bytes": idle,
        "after_rss_bytes": after,
        "growth_bytes": after - idle,
        "peak_rss_bytes": peak,
        "statuses": statuses,
    }
