"""Benchmark choreo-insights-proxy against nginx on loopback, with one command.

    python bench/run.py [--quick | --smoke] [--rounds N] [--duration S] [--out DIR] [--profile]

Installs nginx and wrk from the Debian packages when they are missing (as root), starts every
server on 127.0.0.1, measures, stops everything again (also on Ctrl-C or failure), and writes
DIR/latest.json and DIR/latest.md. bench/README.md describes the rows, targets and choices.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from harness import nginx, phases, procs, proxy, report, wrk
from harness.scenarios import BurstPlan, LoadSettings, progress

BENCH_DIR = Path(__file__).resolve().parent
EXIT_TOOLS_MISSING = 3
BACKGROUND_WARNING_SHARE = 0.05


@dataclass(frozen=True)
class Mode:
    duration_s: float
    rounds: int
    warmup_s: float
    burst: BurstPlan
    memory_requests: int
    memory_max_bytes: int
    profile_s: float


MODES = {
    "full": Mode(10, 5, 3, BurstPlan(clients=100, bursts=6, interval_s=3.0, bursts_per_window=3), 40_000, 8 * report.MB, 10),
    "quick": Mode(3, 3, 1, BurstPlan(clients=100, bursts=4, interval_s=2.5, bursts_per_window=2), 10_000, 8 * report.MB, 5),
    "smoke": Mode(1, 1, 1, BurstPlan(clients=20, bursts=4, interval_s=1.5, bursts_per_window=2), 2_000, 1 * report.MB, 2),
}


class ToolsMissing(RuntimeError):
    """nginx or wrk is missing and cannot be installed here."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark the proxy against nginx on 127.0.0.1 and write latest.json and latest.md.",
    )
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_const", dest="mode", const="quick", help="3 rounds of 3 s per row, smaller memory run (about 2 minutes)")
    speed.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="1 round of 1 s per row, to check that everything runs (under a minute)")
    parser.set_defaults(mode="full")
    parser.add_argument("--rounds", type=int, metavar="N", help="measured runs of each row (default: 5, --quick 3, --smoke 1)")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds per measured run, whole seconds (default: 10, --quick 3, --smoke 1)")
    parser.add_argument("--connections", type=int, default=32, metavar="N", help="wrk connections for the throughput rows (default: 32)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", metavar="DIR", help="folder for latest.json, latest.md and work/ (default: bench/results)")
    parser.add_argument("--profile", action="store_true", help="also sample the proxy's cache-hit and cache-off rows with py-spy")
    parser.add_argument("--proxy-log-level", default="warning", choices=["debug", "info", "warning", "error"], help="log.level of the proxy under test (default: warning, as nginx runs without an access log)")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="S", help="wait up to S seconds for other processes to leave the cores idle before starting (default: 0, start at once)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get; fail when nginx or wrk is missing")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, got {args.rounds}")
    if args.duration is not None and args.duration < 1:
        parser.error(f"--duration must be at least 1 second (wrk counts whole seconds), got {args.duration:g}")
    if args.wait_idle < 0:
        parser.error(f"--wait-idle must be 0 or more seconds, got {args.wait_idle:g}")
    if args.connections < 1:
        parser.error(f"--connections must be 1 or more, got {args.connections}")
    return args


def ensure_tools(no_install: bool) -> tuple[str, str]:
    """Return the nginx and wrk binaries, installing the Debian packages first when missing."""
    missing = [package for package, found in (("nginx", nginx.find_nginx()), ("wrk", wrk.find_wrk())) if found is None]
    if missing:
        command = f"apt-get install -y {' '.join(missing)}"
        if no_install:
            raise ToolsMissing(f"{', '.join(missing)} not installed and --no-install given: run `{command}` first")
        if os.geteuid() != 0:
            raise ToolsMissing(f"{', '.join(missing)} not installed and this user is not root: run `{command}` as root first")
        if shutil.which("apt-get") is None:
            raise ToolsMissing(f"{', '.join(missing)} not installed and apt-get is not available: install them by hand")
        progress(f"installing {', '.join(missing)} from the Debian packages")
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
            completed = subprocess.run(step, env=environment, capture_output=True, text=True)
            if completed.returncode != 0:
                raise ToolsMissing(f"`{' '.join(step)}` failed: {completed.stderr.strip()[-1000:]}")
    nginx_binary, wrk_binary = nginx.find_nginx(), wrk.find_wrk()
    if nginx_binary is None or wrk_binary is None:
        raise ToolsMissing("apt-get finished but nginx or wrk is still not on the PATH")
    return nginx_binary, wrk_binary


def describe_machine(nginx_binary: str, wrk_binary: str) -> dict:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    os_name = "unknown"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx.nginx_version(nginx_binary),
        "wrk": wrk.wrk_version(wrk_binary),
        "proxy": proxy.proxy_version(),
        "uvloop": _installed_version("uvloop"),
        "orjson": _installed_version("orjson"),
        "python_build": python_build(),
    }


def python_build() -> dict:
    """Describe how this interpreter was built, because the proxy rows depend on it by about 20 %.

    pyenv's default build puts libpython in a shared library and compiles it without
    `--enable-optimizations`. Debian's python3 links libpython into the executable. The
    running process shows both facts, so the report states them instead of guessing.
    """
    with open("/proc/self/maps") as maps:
        shared = any("libpython" in line for line in maps)
    configure = sysconfig.get_config_var("CONFIG_ARGS") or ""
    return {
        "executable": os.path.realpath(sys.executable),
        "libpython": "shared library" if shared else "in the executable",
        "enable_optimizations": "--enable-optimizations" in configure,
    }


def warn_about_slow_build(build: dict) -> None:
    if build["libpython"] == "shared library" and not build["enable_optimizations"]:
        progress(f"{build['executable']} uses a shared libpython built without --enable-optimizations "
                 "(pyenv's default): the proxy rows ran about 20 % slower on such a build than on "
                 "Debian's /usr/bin/python3; see 'Interpreter' in bench/README.md")


def _installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wait_for_idle_cores(wait_s: float) -> dict[int, float]:
    """Return each core's busy share before the start, after waiting up to `wait_s` for idle cores."""
    deadline = time.monotonic() + wait_s
    while True:
        background = procs.background_busy(sorted(os.sched_getaffinity(0)))
        busy_cores = {core: share for core, share in background.items() if share > BACKGROUND_WARNING_SHARE}
        if not busy_cores:
            return background
        if time.monotonic() >= deadline:
            progress(f"other processes keep cores busy before the start ({busy_cores}): expect noisy numbers")
            return background
        progress(f"waiting for idle cores, busy now: {busy_cores}")
        time.sleep(3)


def run(args: argparse.Namespace, nginx_binary: str, wrk_binary: str) -> dict:
    """Run every phase and return the results; a finally block stops every started process."""
    mode = MODES[args.mode]
    duration_s = args.duration if args.duration is not None else mode.duration_s
    rounds = args.rounds if args.rounds is not None else mode.rounds
    work_dir = args.out / "work"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)

    machine = describe_machine(nginx_binary, wrk_binary)
    warn_about_slow_build(machine["python_build"])
    server_cpu, load_cpu, pinning = procs.cpu_plan()
    background = wait_for_idle_cores(args.wait_idle)
    if load_cpu is not None:
        # The harness drives the burst and memory load itself, so it stays off the server's core.
        os.sched_setaffinity(0, {load_cpu})
    proxy_unavailable = proxy.check_runnable()
    if proxy_unavailable:
        progress(f"proxy rows will not run: {proxy_unavailable}")

    load = LoadSettings(duration_s, mode.warmup_s, rounds, wrk_binary, server_cpu, load_cpu)
    group = procs.ProcessGroup(work_dir)
    ctx = phases.Context(group, work_dir, nginx_binary, load, args.connections, server_cpu, args.proxy_log_level, proxy_unavailable)
    results: dict = {
        "schema": 1,
        "started_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py" + "".join(f" {shlex.quote(arg)}" for arg in args.argv),
        "machine": machine,
        "settings": {
            "mode": args.mode,
            "duration_s": duration_s,
            "rounds": rounds,
            "warmup_s": mode.warmup_s,
            "connections": args.connections,
            "pinning": pinning,
            "background_busy_before_start": background,
            "proxy_log_level": args.proxy_log_level,
            "response_bytes": len(phases.payloads.response_body()),
        },
    }
    try:
        throughput_rows, profiles = phases.throughput_phase(ctx, mode.profile_s if args.profile else 0)
        latency_rows, latency = phases.latency_phase(ctx)
        burst = phases.burst_phase(ctx, mode.burst)
        memory = phases.memory_phase(ctx, mode.memory_requests, mode.memory_max_bytes, 300)
    finally:
        # A second Ctrl-C must not cut the teardown short and leave servers running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
        group.close()
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return assemble(results, throughput_rows, profiles, latency_rows, latency, burst, memory)


def assemble(results: dict, throughput_rows, profiles, latency_rows, latency, burst, memory) -> dict:
    rows = {row.key: report.summarize_row(row) for row in throughput_rows}
    ratios = {
        "cache_off": report.pair_ratios("proxy, cache off / nginx proxy", rows["nginx_proxy"], rows["proxy_cache_off"]),
        "cache_hit": report.pair_ratios("proxy, cache hits / nginx proxy_cache", rows["nginx_cache"], rows["proxy_cache_hit"]),
    }
    direct, via_nginx, proxied = (report.summarize_row(row) for row in latency_rows)
    added = report.latency_added(direct, proxied)
    added_by_nginx = report.latency_added(direct, via_nginx)
    targets = (
        report.throughput_targets(rows, ratios)
        + report.latency_targets(direct, proxied, added)
        + report.burst_targets(burst)
        + report.memory_targets(memory)
    )
    return {
        **results,
        "rows": list(rows.values()),
        "ratios": list(ratios.values()),
        "latency": {**latency, "rows": [direct, via_nginx, proxied], "added": added, "added_by_nginx": added_by_nginx},
        "burst": burst,
        "memory": memory,
        "targets": targets,
        "profile": profiles,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = argv
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        nginx_binary, wrk_binary = ensure_tools(args.no_install)
    except ToolsMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_TOOLS_MISSING
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, nginx_binary, wrk_binary)
    except KeyboardInterrupt:
        print("bench: interrupted; all servers stopped, no results written", file=sys.stderr)
        return 130
    except (procs.ProcessFailed, wrk.WrkFailed) as exc:
        print(f"bench: {exc}\nall servers stopped, no results written", file=sys.stderr)
        return 1
    report.write_json(results, args.out / "latest.json")
    report.write_markdown(results, args.out / "latest.md")
    print("\n".join(report.targets_table(results["targets"])))
    print(f"\nwrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    incomplete = [row["label"] for row in results["rows"] + results["latency"]["rows"] if row["status"] != "ok"]
    incomplete += [name for name in ("burst", "memory") if results[name]["status"] != "ok"]
    if incomplete:
        print(f"bench: not everything ran ({'; '.join(incomplete)}); the reasons are in latest.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
