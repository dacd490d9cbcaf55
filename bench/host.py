"""The whole machine's CPU use over a window, from ``/proc/stat`` (Linux; ``None`` elsewhere).

The servers' own CPU (``process_cpu_seconds_total``) says which process is busy; this says
whether anything is left. Distributed mode runs a facade, a worker, the broker and the load
generator on the same cores: at ``machine busy%`` near 100 the machine itself is the limit, and
no lever inside one process raises the throughput without lowering the CPU every request costs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

__all__ = ["CpuTimes", "busy_pct", "cpu_times"]


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
