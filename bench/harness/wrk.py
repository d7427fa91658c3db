"""Run wrk with the POST script and return its summary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import procs

LUA_SCRIPT = Path(__file__).resolve().parent.parent / "lua" / "post.lua"


class WrkFailed(RuntimeError):
    """wrk exited with an error or printed no summary."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def find_wrk() -> str | None:
    return shutil.which("wrk")


def wrk_version(binary: str) -> str:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"wrk (\S+)", output)
    return match.group(1) if match else output.strip()


def run(
    binary: str,
    url: str,
    bodies_file: Path,
    *,
    connections: int,
    duration_s: float,
    cpu: int | None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run one wrk thread POSTing the bodies in `bodies_file` for `duration_s` seconds.

    The subprocess gets a hard limit of twice the duration plus 30 s, so a hung wrk cannot
    stall the benchmark.
    """
    argv = [
        binary,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(bodies_file),
    ]
    if cpu is not None and procs.TASKSET:
        argv = [procs.TASKSET, "-c", str(cpu), *argv]
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=2 * duration_s + 30, env=procs.child_environment()
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"wrk against {url} did not finish within {exc.timeout:.0f} s") from exc
    line = next((line for line in completed.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise WrkFailed(
            f"wrk against {url} exited with status {completed.returncode}: "
            f"{(completed.stderr or completed.stdout).strip()[-2000:]}"
        )
    summary = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=summary["requests"],
        duration_s=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        errors=summary["errors"],
    )
