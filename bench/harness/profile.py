"""Sample the proxy with py-spy while wrk loads it, and summarize where the CPU time goes."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from . import procs

_LINE_NUMBER = re.compile(r":\d+\)$")


def find_py_spy() -> str | None:
    """Return py-spy from this interpreter's environment or the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_command(py_spy: str, pid: int, duration_s: float, output: Path, rate_hz: int) -> list[str]:
    return [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(rate_hz),
        "--format",
        "raw",
        "--output",
        str(output),
    ]


ENTRY_SHARE = 0.995


def _frame_name(frame: str) -> str:
    """Return "function (last/two/parts.py)" for a py-spy frame "function (/long/path/file.py:123)"."""
    frame = _LINE_NUMBER.sub(")", frame.strip())
    match = re.match(r"^(.*) \((.*)\)$", frame)
    if match is None:
        return frame
    function, path = match.groups()
    parts = Path(path).parts
    marker = next((i for i, part in enumerate(parts) if part in {"site-packages", "lib"}), None)
    short = "/".join(parts[marker + 1 :]) if marker is not None and marker + 1 < len(parts) else "/".join(parts[-2:])
    return f"{function} ({short})"


def summarize(raw_path: Path, top: int = 15) -> dict:
    """Return the sample count and the top functions by self and by inclusive share of samples.

    A self sample of the frame that calls the event loop (asyncio's `Runner.run`) is time spent
    in the loop itself, which with uvloop is native code py-spy does not see into.
    """
    self_counts: Counter[str] = Counter()
    inclusive_counts: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive_counts[frame] += count

    def shares(counter: Counter[str]) -> list[dict]:
        return [{"function": name, "share": round(count / total, 4)} for name, count in counter.most_common(top)]

    # Frames in (nearly) every sample, the entry point down to the event loop's run(), tell
    # nothing. py-spy sometimes catches a sample without them, so "every" is 99.5 %.
    for name in [name for name, count in inclusive_counts.items() if count >= ENTRY_SHARE * total]:
        del inclusive_counts[name]
    return {"samples": total, "self": shares(self_counts), "inclusive": shares(inclusive_counts)}


def record(group: procs.ProcessGroup, py_spy: str, pid: int, duration_s: float, output: Path, cpu: int | None):
    """Start py-spy on `pid` for `duration_s` seconds; the caller waits for the returned child."""
    command = record_command(py_spy, pid, duration_s, output, rate_hz=200)
    return group.start(output.stem + "-py-spy", command, cpu=cpu), command
