"""Smoke run of bench/run.py: it starts every server, writes its result files and counts right.

The benchmark's timings are reported, never asserted here: these checks only cover that every
row ran without failed requests and that the counted results (upstream calls, token requests)
are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"
EXIT_TOOLS_MISSING = 3

# The smoke run takes about half a minute: longer than the suite's default per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _why_tools_unavailable() -> str | None:
    missing = [name for name in ("nginx", "wrk") if shutil.which(name) is None and shutil.which(name, path="/usr/sbin") is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{' and '.join(missing)} not installed and the tests do not run as root, so apt-get cannot install them"
    if shutil.which("apt-get") is None:
        return f"{' and '.join(missing)} not installed and apt-get is not available"
    return None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    reason = _why_tools_unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    if completed.returncode == EXIT_TOOLS_MISSING:
        pytest.skip(f"the benchmark could not install nginx or wrk: {completed.stderr.strip()}")
    assert completed.returncode == 0, f"bench/run.py --smoke failed:\n{completed.stderr[-4000:]}"
    return json.loads((out / "latest.json").read_text()), out


def _rows(results: dict) -> dict[str, dict]:
    rows = results["rows"] + results["latency"]["rows"]
    return {row["key"]: row for row in rows}


def test_smoke_writes_result_files(smoke_run: tuple[dict, Path]) -> None:
    """The run leaves latest.json and a latest.md with the rows and targets tables."""
    _, out = smoke_run
    markdown = (out / "latest.md").read_text()
    assert "| nginx proxy_cache |" in markdown
    assert "| proxy, cache hits |" in markdown
    assert "## Targets" in markdown


@pytest.mark.parametrize(
    "key",
    ["nginx_proxy", "proxy_cache_off", "nginx_cache", "proxy_cache_hit", "upstream_direct", "nginx_latency", "proxy_latency"],
)
def test_row_ran_without_failed_requests(smoke_run: tuple[dict, Path], key: str) -> None:
    """Every row was measured, completed requests, and no request failed or got a non-2xx status."""
    row = _rows(smoke_run[0])[key]
    assert row["status"] == "ok"
    assert row["runs"], "the row has no measured run"
    assert all("error" not in run for run in row["runs"])
    assert all(run["requests"] > 0 for run in row["runs"])
    assert row["failed_requests"] == 0


def test_cache_hit_rows_skip_upstream(smoke_run: tuple[dict, Path]) -> None:
    """After the warm-up, both caching rows serve every measured request from their cache."""
    rows = _rows(smoke_run[0])
    for key in ("nginx_cache", "proxy_cache_hit"):
        assert [run["upstream_calls"] for run in rows[key]["runs"]] == [0] * len(rows[key]["runs"]), key


def test_cache_off_row_forwards_everything(smoke_run: tuple[dict, Path]) -> None:
    """With cache.ttl_s = 0 and distinct queries, each completed request cost one upstream call."""
    row = _rows(smoke_run[0])["proxy_cache_off"]
    for run in row["runs"]:
        # wrk stops counting with up to one request per connection still in flight.
        assert run["requests"] <= run["upstream_calls"] <= run["requests"] + row["connections"]


def test_burst_upstream_calls_per_window(smoke_run: tuple[dict, Path]) -> None:
    """Each cache window's first burst causes one upstream call per distinct query, later ones none."""
    burst = smoke_run[0]["burst"]
    assert burst["status"] == "ok"
    windows = -(-burst["plan"]["bursts"] // burst["plan"]["bursts_per_window"])
    assert burst["upstream_calls"] == burst["distinct_queries"] * windows
    assert [b["upstream_calls"] for b in burst["bursts"]] == [b["expected_upstream_calls"] for b in burst["bursts"]]
    assert all(set(b["statuses"]) == {"200"} for b in burst["bursts"])


def test_burst_one_token_request(smoke_run: tuple[dict, Path]) -> None:
    """The whole burst scenario, within one token lifetime, costs exactly one token request."""
    assert smoke_run[0]["burst"]["token_requests"] == 1


def test_memory_phase_measured(smoke_run: tuple[dict, Path]) -> None:
    """The memory phase sent every distinct query successfully and read the proxy's RSS."""
    memory = smoke_run[0]["memory"]
    assert memory["status"] == "ok"
    assert memory["statuses"] == {"200": memory["requests"]}
    assert memory["idle_rss_bytes"] > 0


def test_every_target_has_verdict(smoke_run: tuple[dict, Path]) -> None:
    """Each target was evaluated (pass or fail), none left as not run."""
    results = smoke_run[0]
    assert [target["target"] for target in results["targets"] if target["pass"] is None] == []
