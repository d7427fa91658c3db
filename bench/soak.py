"""Soak test: many concurrent clients against the proxy and the Choreo stand-in, with faults cycling.

Run on demand, not in CI, with the interpreter that has the project installed:

    python bench/soak.py --duration 600 --clients 50     # the recorded 10-minute run
    python bench/soak.py --quick                          # about 20 s, 20 clients

It starts `python -m proxy simulate` (tokens living `--token-lifetime` seconds) and
`python -m proxy serve` as child processes on free 127.0.0.1 ports, with a generated
configuration whose cache TTL is short, so that upstream traffic and token refreshes go on all
the time. The clients send a mix of repeated queries (cache hits and merged requests) and
distinct ones (upstream calls). Every `--fault-period` seconds the script switches the
stand-in's faults through `POST /_standin/faults`: a healthy phase, then the next fault of
`FAULT_CYCLE`, then a healthy phase again, and so on. The cycle injects no upstream 500, so
every 500 a client gets is the proxy's own failure. The proxy's resident memory is read from
/proc/PID/status during the run.

The report is printed and written as JSON to `--out`. It counts the requests, the responses by
status and by error code, and the client-side connection errors. It adds the stand-in's counters
(token requests, upstream calls, expired and revoked tokens presented), latency percentiles, the
proxy's memory at the start, after the first phase, at half time and at the end, each phase
with its responses, and the proxy's exit status after SIGTERM.

Exit status: 0 when every must-be-zero count is zero (500 responses, expired tokens presented
upstream) and the proxy exited 0 on SIGTERM; 1 when one is not; 2 for invalid options; 3 when
the stand-in or the proxy could not be started. Every request loop stops at the deadline and
after `--max-requests` requests per client, and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from proxy.standin.insights import FIXTURE_ORG
from proxy.standin.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "soak.json"
QUERY = "query ($org: OrgFilter!) { listEnvironments(org: $org) { id name } }"
# Repeated queries draw from this many variable sets; the rest are distinct.
REPEATED_SETS = 20
REPEATED_SHARE = 0.7
CLIENT_TIMEOUT_S = 60.0
RSS_SAMPLE_INTERVAL_S = 5.0
START_TIMEOUT_S = 30.0
EXIT_FAILED = 1
EXIT_NOT_STARTED = 3

# (name, fault update) pairs applied in turn, each followed by a healthy phase.
FAULT_CYCLE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("token endpoint down (connection reset)", {"token_endpoint": "down"}),
    ("token endpoint responds 500", {"token_endpoint": "error"}),
    ("burst of 40 upstream 401s", {"insights_fail_next": {"count": 40, "status": 401}}),
    ("token endpoint hangs past oauth.timeout_s", {"token_endpoint": "slow"}),
    ("Insights API 400 ms latency", {"insights_latency_ms": 400}),
    ("token endpoint 1.5 s latency", {"token_endpoint": "slow", "token_latency_ms": 1500}),
    ("burst of 100 upstream 503s", {"insights_fail_next": {"count": 100, "status": 503}}),
    ("token lifetime 2 s", {"token_lifetime_s": 2}),
    ("burst of 50 upstream 429s",
     {"insights_fail_next": {"count": 50, "status": 429, "retry_after_s": 1}}),
)
HEALTHY = "healthy"


@dataclass
class Phase:
    """One fault setting and the responses clients got while it was in force."""

    name: str
    started_s: float
    statuses: Counter[int] = field(default_factory=Counter)
    # Changes of the stand-in's counters during the phase.
    stand_in: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally:
    """Responses and errors the clients saw over the whole run."""

    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)
    durations: dict[str, list[float]] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)

    def record(self, status: int, code: str | None, cache: str, duration_s: float) -> None:
        self.statuses[status] += 1
        if code is not None:
            self.codes[code] += 1
        self.cache[cache] += 1
        self.durations.setdefault(str(status), []).append(duration_s)
        if self.phases:
            self.phases[-1].statuses[status] += 1


class Child:
    """A child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("INSIGHTS_PROXY_")}
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                                        start_new_session=True)

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, signum: int, timeout_s: float) -> int:
        """Send `signum`, wait up to `timeout_s` for the exit, kill after that; return the status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


class StartFailed(RuntimeError):
    """A child process exited or did not become ready in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int | None:
    """Return the resident set size of a process in KiB, from /proc/PID/status (Linux only)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def write_config(path: Path, stand_in: str, proxy_port: int, admin_port: int,
                 cache_ttl_s: float) -> None:
    org = FIXTURE_ORG.uuid
    path.write_text(f"""\
[server]
port = {proxy_port}
drain_timeout_s = 5

[admin]
port = {admin_port}

[upstream]
url = "{stand_in}/93tu/insights/1.0.0/query-api"
timeout_s = 10
default_variables = {{ org = {{ orgId = "{org}" }} }}

[oauth]
token_url = "{stand_in}/oauth2/token"
revoke_url = "{stand_in}/oauth2/revoke"
client_id = "{DEMO_CLIENT_ID}"
client_secret = "{DEMO_CLIENT_SECRET}"

[cache]
ttl_s = {cache_ttl_s}

[log]
format = "json"
level = "warning"
""")
    path.chmod(0o600)


async def wait_ready(session: aiohttp.ClientSession, child: Child, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise StartFailed(f"{child.name} exited with status {child.process.returncode}:\n"
                              f"{child.log_tail()}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise StartFailed(f"{child.name} did not respond at {url} within {START_TIMEOUT_S:g} s:\n"
                      f"{child.log_tail()}")


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        return await response.json()


async def run_client(number: int, url: str, deadline: float, max_requests: int,
                     tally: Tally, seed: int) -> None:
    """Send queries one after another until the deadline or `max_requests`, counting responses."""
    rng = random.Random(seed * 1000 + number)
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for sequence in range(max_requests):
            if loop.time() >= deadline:
                return
            if rng.random() < REPEATED_SHARE:
                marker = f"shared-{rng.randrange(REPEATED_SETS)}"
            else:
                marker = f"client-{number}-{sequence}"
            payload = {"query": QUERY, "variables": {"org": {"orgId": FIXTURE_ORG.uuid},
                                                     "marker": marker}}
            started = loop.time()
            try:
                async with session.post(url, json=payload) as response:
                    body = await response.read()
                    status = response.status
                    cache = cache_kind(response.headers.get("Cache-Status", ""))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                tally.client_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            code = None if status == 200 else error_code(body)
            tally.record(status, code, cache, loop.time() - started)


def error_code(body: bytes) -> str:
    """Return the proxy's error code from an error body, or a label for an upstream body."""
    try:
        payload = json.loads(body)
        return str(payload["errors"][0]["extensions"]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "passed through from upstream"


def cache_kind(header: str) -> str:
    """Reduce a Cache-Status value to hit, stale, miss, collapsed or bypass."""
    parts = [part.strip() for part in header.split(";")[1:]]
    if not parts:
        return "none"
    if "fwd=stale" in parts:
        return "stale"
    if parts[0] == "hit":
        return "hit"
    if "collapsed" in parts:
        return "collapsed"
    return parts[0].removeprefix("fwd=")


async def cycle_faults(session: aiohttp.ClientSession, stand_in: str, started: float,
                       deadline: float, period_s: float, tally: Tally) -> None:
    """Apply a healthy phase, then each fault of FAULT_CYCLE with a healthy phase after it."""
    loop = asyncio.get_running_loop()
    faults_url = f"{stand_in}/_standin/faults"
    stats_url = f"{stand_in}/_standin/stats"
    previous = await get_json(session, stats_url)
    for index in range(10_000):
        now = loop.time()
        if index > 0:
            current = await get_json(session, stats_url)
            tally.phases[-1].stand_in = counter_changes(previous, current)
            previous = current
        if now >= deadline:
            return
        if index % 2 == 0:
            name, update = HEALTHY, None
        else:
            name, update = FAULT_CYCLE[(index // 2) % len(FAULT_CYCLE)]
        async with session.delete(faults_url) as response:
            response.raise_for_status()
        if update is not None:
            async with session.post(faults_url, json=update) as response:
                response.raise_for_status()
        tally.phases.append(Phase(name, round(now - started, 1)))
        await asyncio.sleep(min(period_s, deadline - now))


def counter_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Return the stand-in counters that changed, as differences (active_tokens as it is)."""
    changes = {name: after[name] - before.get(name, 0) for name in after
               if name != "active_tokens"}
    return {name: change for name, change in changes.items() if change}


async def sample_memory(pid: int, started: float, deadline: float,
                        samples: list[tuple[float, int]]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        kib = rss_kib(pid)
        if kib is not None:
            samples.append((round(loop.time() - started, 1), kib))
        await asyncio.sleep(min(RSS_SAMPLE_INTERVAL_S, max(0.0, deadline - loop.time())))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

    return {"count": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 1)}


async def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    stand_in_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    stand_in = f"http://127.0.0.1:{stand_in_port}"
    config = work / "proxy.toml"
    write_config(config, stand_in, proxy_port, admin_port, args.cache_ttl)
    children: list[Child] = []
    report: dict[str, Any] = {}
    try:
        children.append(Child("stand-in", [
            sys.executable, "-m", "proxy", "simulate", "--port", str(stand_in_port),
            "--token-lifetime", str(args.token_lifetime)], work / "stand-in.log"))
        async with aiohttp.ClientSession() as control:
            await wait_ready(control, children[0], f"{stand_in}/_standin/stats")
            children.append(Child("proxy", [
                sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                work / "proxy.log"))
            proxy = children[1]
            admin = f"http://127.0.0.1:{admin_port}"
            await wait_ready(control, proxy, f"{admin}/readyz")
            report = await drive(args, control, stand_in, proxy,
                                 f"http://127.0.0.1:{proxy_port}/query-api")
            report["token_at_end"] = await get_json(control, f"{admin}/admin/token")
        report["proxy_exit_status"] = proxy.stop(signal.SIGTERM, timeout_s=15)
    finally:
        for child in reversed(children):
            child.stop(signal.SIGINT, timeout_s=10)
    return report


async def drive(args: argparse.Namespace, control: aiohttp.ClientSession, stand_in: str,
                proxy: Child, url: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tally = Tally()
    samples: list[tuple[float, int]] = []
    rss_start = rss_kib(proxy.process.pid)
    baseline = await get_json(control, f"{stand_in}/_standin/stats")
    started = loop.time()
    deadline = started + args.duration
    await asyncio.gather(
        cycle_faults(control, stand_in, started, deadline, args.fault_period, tally),
        sample_memory(proxy.process.pid, started, deadline, samples),
        *(run_client(number, url, deadline, args.max_requests, tally, args.seed)
          for number in range(args.clients)),
    )
    elapsed = loop.time() - started
    async with control.delete(f"{stand_in}/_standin/faults") as response:
        response.raise_for_status()
    stats = await get_json(control, f"{stand_in}/_standin/stats")
    rss_end = rss_kib(proxy.process.pid)
    counts = {name: stats[name] - baseline.get(name, 0) for name in stats
              if name != "active_tokens"}
    after_warmup = next((kib for at, kib in samples if at >= args.fault_period), rss_start)
    at_half = next((kib for at, kib in samples if at >= args.duration / 2), rss_end)
    requests = sum(tally.statuses.values())
    return {
        "elapsed_s": round(elapsed, 1),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "responses_by_status": {str(status): count
                              for status, count in sorted(tally.statuses.items())},
        "error_codes": dict(tally.codes.most_common()),
        "cache_status": dict(tally.cache.most_common()),
        "status_500": tally.statuses.get(500, 0),
        "client_errors": sum(tally.client_errors.values()),
        "client_error_types": dict(tally.client_errors),
        "token_requests": counts["token_requests"],
        "token_errors": counts["token_errors"],
        "upstream_calls": counts["insights_requests"],
        "upstream_rejected": counts["insights_rejected"],
        "upstream_faults_injected": counts["insights_faults_injected"],
        "expired_tokens_presented": counts["expired_tokens_presented"],
        "revoked_tokens_presented": counts["revoked_tokens_presented"],
        "latency_by_status": {status: percentiles(values)
                              for status, values in sorted(tally.durations.items())},
        "rss_kib": {"start": rss_start, "after_first_phase": after_warmup,
                    "at_half_time": at_half, "end": rss_end,
                    "max": max((kib for _, kib in samples), default=rss_end),
                    "samples": samples},
        "faults_applied": [{"at_s": phase.started_s, "name": phase.name,
                            "responses": {str(k): v for k, v in sorted(phase.statuses.items())},
                            "stand_in": phase.stand_in}
                           for phase in tally.phases],
    }


def judge(report: dict[str, Any]) -> list[str]:
    """Return the must-be-zero checks that failed, as sentences."""
    failures = []
    if report["status_500"]:
        failures.append(f"{report['status_500']} requests got 500")
    if report["expired_tokens_presented"]:
        failures.append(f"{report['expired_tokens_presented']} expired tokens reached the "
                        "upstream")
    if report["proxy_exit_status"] != 0:
        failures.append(f"the proxy exited with status {report['proxy_exit_status']} on SIGTERM")
    return failures


def print_summary(report: dict[str, Any]) -> None:
    rss = report["rss_kib"]
    lines = [
        f"soak: {report['settings']['clients']} clients for {report['elapsed_s']} s, "
        f"{report['requests']} requests ({report['requests_per_s']}/s)",
        f"  responses          {report['responses_by_status']}",
        f"  error codes        {report['error_codes']}",
        f"  client errors      {report['client_errors']} {report['client_error_types']}",
        f"  token requests     {report['token_requests']} ({report['token_errors']} failed)",
        f"  upstream calls     {report['upstream_calls']} "
        f"({report['upstream_rejected']} rejected, {report['upstream_faults_injected']} injected "
        "faults)",
        f"  expired tokens     {report['expired_tokens_presented']} (must be 0)",
        f"  revoked tokens     {report['revoked_tokens_presented']}",
        f"  500 responses      {report['status_500']} (must be 0)",
        f"  proxy RSS (KiB)    start {rss['start']}, after first phase "
        f"{rss['after_first_phase']}, at half time {rss['at_half_time']}, end {rss['end']}, "
        f"max {rss['max']}",
        f"  proxy exit status  {report['proxy_exit_status']} after SIGTERM",
        f"  phases             {len(report['faults_applied'])}",
    ]
    lines.append("PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"]))
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/soak.py",
        description="Soak the proxy: concurrent clients against the stand-in with faults "
                    "switched on and off; see the module docstring.")
    parser.add_argument("--duration", type=float, default=600.0, metavar="S",
                        help="seconds of load (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=50, metavar="N",
                        help="concurrent clients, one connection each (default: %(default)s)")
    parser.add_argument("--fault-period", type=float, default=20.0, metavar="S",
                        help="seconds each phase lasts, healthy and faulty in turn "
                             "(default: %(default)s)")
    parser.add_argument("--token-lifetime", type=int, default=5, metavar="S",
                        help="lifetime of the stand-in's tokens in seconds (default: %(default)s)")
    parser.add_argument("--cache-ttl", type=float, default=1.0, metavar="S",
                        help="the proxy's cache.ttl_s in seconds (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, metavar="N",
                        help="requests per client at most, a bound besides the duration "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the query mix "
                                                            "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="run about 20 s with 20 clients and 2 s phases")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH",
                        help="where to write the JSON report; the logs and configuration go "
                             "to a folder beside it (default: bench/results/soak.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.clients, args.fault_period = 20.0, 20, 2.0
    if args.duration <= 0 or args.fault_period <= 0 or args.cache_ttl < 0:
        parser.error("--duration and --fault-period must be above 0 and --cache-ttl at least 0")
    if not 1 <= args.clients <= 1000:
        parser.error(f"--clients {args.clients} is out of range; give 1 to 1000")
    if args.token_lifetime < 2:
        parser.error(f"--token-lifetime {args.token_lifetime} is too short; give at least 2 s")
    if args.max_requests < 1:
        parser.error("--max-requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    work = out.with_name(out.stem + "-work")
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(soak(args, work))
    except StartFailed as exc:
        print(f"soak: could not start the servers: {exc}", file=sys.stderr)
        return EXIT_NOT_STARTED
    report = {
        "command": " ".join(["python", "bench/soak.py", *(argv if argv is not None
                                                            else sys.argv[1:])]),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "settings": {"duration_s": args.duration, "clients": args.clients,
                     "fault_period_s": args.fault_period, "token_lifetime_s": args.token_lifetime,
                     "cache_ttl_s": args.cache_ttl, "seed": args.seed},
        **report,
    }
    report["failures"] = judge(report)
    report["passed"] = not report["failures"]
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"report written to {out}")
    return 0 if report["passed"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
