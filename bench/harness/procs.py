"""Child processes of the benchmark: start, pin to a core, wait for readiness, account, stop.

Every child starts in its own session (process group), so stopping it also stops whatever it
forked (nginx workers), and the terminal's Ctrl-C reaches only the harness, which then stops
the children in reverse start order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TASKSET = shutil.which("taskset")


class ProcessFailed(RuntimeError):
    """A child exited early or did not become ready."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_environment() -> dict[str, str]:
    """Return this environment without proxy settings that would override the generated config."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("INSIGHTS_PROXY_") and name.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def last_log_line(self) -> str:
        tail = [line.strip() for line in self.log_tail().splitlines() if line.strip()]
        return tail[-1] if tail else "no output"


class ProcessGroup:
    """Own the benchmark's child processes and stop every one of them on `close()`."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], *, cpu: int | None = None) -> Child:
        """Start `argv` in a new session, pinned to `cpu` when given, with output to `<name>.log`."""
        argv = list(argv)
        preexec = None
        if cpu is not None:
            if TASKSET:
                argv = [TASKSET, "-c", str(cpu), *argv]
            else:
                preexec = _pin_to(cpu)
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_environment(),
                preexec_fn=preexec,
            )
        child = Child(name, process, log_path)
        self._children.append(child)
        return child

    def stop(self, child: Child, timeout_s: float = 10.0) -> None:
        """Send SIGTERM to the child's process group, then SIGKILL after `timeout_s`."""
        if child in self._children:
            self._children.remove(child)
        if child.process.poll() is not None:
            return
        _signal_group(child.pid, signal.SIGTERM)
        try:
            child.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            child.process.wait(5)

    def close(self) -> None:
        """Stop all children, the last started first."""
        while self._children:
            self.stop(self._children[-1])


def _pin_to(cpu: int):
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def wait_for_http(child: Child, url: str, timeout_s: float = 30.0) -> None:
    """Poll `url` with GET until any HTTP status comes back; raise if the child exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ProcessFailed(
                f"{child.name} exited with status {child.process.returncode} before it was ready: "
                f"{child.last_log_line()} (log: {child.log_path})"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise ProcessFailed(
        f"{child.name} did not respond to {url} within {timeout_s:.0f} s (last error: {last_error}); "
        f"its last output: {child.last_log_line()} (log: {child.log_path})"
    )


def _stat_fields(pid: int) -> list[str]:
    # /proc/PID/stat is "pid (comm) state ppid ...": split after the closing parenthesis, since
    # comm may contain spaces. Field N of proc(5) is then at index N - 3.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """Return `pid` and all its descendants that are alive now."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parents[int(entry)] = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = [pid]
    for parent in tree:
        tree.extend(child for child, its_parent in parents.items() if its_parent == parent)
    return tree


def cpu_seconds(pid: int) -> dict[int, float]:
    """Return user plus system CPU seconds of `pid` and each descendant, from the kernel's accounting."""
    times = {}
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        utime, stime = int(fields[11]), int(fields[12])
        times[member] = (utime + stime) / CLOCK_TICKS_PER_SECOND
    return times


def cpu_seconds_between(before: dict[int, float], after: dict[int, float]) -> float:
    """Return the CPU seconds spent between two `cpu_seconds` snapshots of one process tree.

    A process that appeared in between counts in full. The time of a process that exited in
    between is lost, but the servers measured here keep their processes while under load.
    """
    return sum(seconds - before.get(member, 0.0) for member, seconds in after.items())


@dataclass(frozen=True)
class CoreTimes:
    """Clock ticks of one core since boot, from /proc/stat.

    `processes` is user, nice and system time. `interrupts` is irq and softirq time, which the
    kernel charges to no process; loopback traffic spends much of its receive path there.
    """

    processes: int
    interrupts: int
    total: int


def core_times(core: int) -> CoreTimes:
    """Return the clock ticks `core` spent on processes, on interrupts and in all, since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{core}":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in values[:8])
            return CoreTimes(user + nice + system, irq + softirq, user + nice + system + idle + iowait + irq + softirq + steal)
    raise ProcessFailed(f"/proc/stat has no line for cpu{core}")


def core_busy_between(before: CoreTimes, after: CoreTimes) -> float | None:
    """Return the share of time a core spent on processes or interrupts between two readings."""
    total = after.total - before.total
    busy = (after.processes - before.processes) + (after.interrupts - before.interrupts)
    return busy / total if total > 0 else None


def resident_bytes(pid: int) -> int:
    """Return the resident set size of `pid` alone, in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def peak_resident_bytes(pid: int) -> int:
    """Return the peak resident set size (VmHWM) of `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ProcessFailed(f"/proc/{pid}/status has no VmHWM line")


def background_busy(cores: list[int], seconds: float = 2.0) -> dict[int, float]:
    """Return each core's busy share over `seconds`, taken before the benchmark starts anything."""
    before = {core: core_times(core) for core in cores}
    time.sleep(seconds)
    shares = {core: core_busy_between(before[core], core_times(core)) for core in cores}
    return {core: round(share, 3) for core, share in shares.items() if share is not None}


def cpu_plan() -> tuple[int | None, int | None, str]:
    """Return (server core, load core, note): the first two cores this process may use, or none."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, f"only {len(cores)} core available: nothing is pinned"
    how = "taskset -c" if TASKSET else "sched_setaffinity"
    note = f"server under test on core {cores[0]}; wrk, upstream, stand-in and harness on core {cores[1]} ({how})"
    return cores[0], cores[1], note


def python_command(*args: str) -> list[str]:
    """Return a command that runs this interpreter, so children use the same environment."""
    return [sys.executable, *args]
