"""The whole machine's CPU use over a window, from ``/proc/stat``, and one process's, from
``/proc/<pid>/stat`` (Linux; ``None`` elsewhere).

The servers' own CPU (``process_cpu_seconds_total``) says which process is busy; the machine's
says whether anything is left. Distributed mode runs a facade, a worker, the broker and the load
generator on the same cores: at ``machine busy%`` near 100 the machine itself is the limit, and
no lever inside one process raises the throughput without lowering the CPU every request costs.
A server with no metrics (the bare gRPC floor, ``bench.grpc_floor``) is read by its pid.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

__all__ = ["CpuTimes", "busy_pct", "cpu_times", "loadavg", "process_cpu_s"]


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative jiffies of all cores since boot."""

    busy: int
    total: int


def cpu_times() -> CpuTimes | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat", encoding="ascii") as stat:
            # cpu  user nice system idle iowait irq softirq steal ...
            jiffies = [int(v) for v in stat.readline().split()[1:]]
        idle = jiffies[3] + jiffies[4]
        return CpuTimes(busy=sum(jiffies[:8]) - idle, total=sum(jiffies[:8]))
    return None


def busy_pct(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Busy share of all cores between two readings, in %; ``None`` if either is missing."""
    if start is None or end is None or end.total <= start.total:
        return None
    return 100.0 * (end.busy - start.busy) / (end.total - start.total)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) process ``pid`` has used; ``None`` if gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # pid (comm) state ppid ... utime stime: fields 14 and 15; comm may hold spaces.
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def loadavg() -> float | None:
    """1-minute load average: on a shared small machine, other work skews every number."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
