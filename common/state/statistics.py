"""Triton's statistics of one model version, as a worker's heartbeat carries them.

A worker counts into ``VersionStatistics`` (``worker/statistics.py`` says what each field
counts); its heartbeat carries a ``StatisticsReport``: copies of every version's counters, when
they were read, and how soon it reports the next changes. A facade sums the reports of the live
workers (``facade/statistics.py``). Every duration is in nanoseconds; every field is
cumulative since the worker started, so reports of one worker only grow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["BatchSizeStatistics", "StatisticsReport", "VersionStatistics"]


@dataclass(slots=True)
class BatchSizeStatistics:
    """The batches of one size (rows) that ran: how many, and their compute times."""

    count: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    def add(self, other: BatchSizeStatistics) -> None:
        self.count += other.count
        self.compute_input_ns += other.compute_input_ns
        self.compute_infer_ns += other.compute_infer_ns
        self.compute_output_ns += other.compute_output_ns

    def to_list(self) -> list[int]:
        return [self.count, self.compute_input_ns, self.compute_infer_ns, self.compute_output_ns]


@dataclass(slots=True)
class VersionStatistics:
    """One model version's counters (mutable: the worker adds to them on its event loop)."""

    last_inference_ms: int = 0
    """Epoch milliseconds of the last batch (or failure) counted."""
    inference_count: int = 0
    """Rows of the requests answered with outputs."""
    execution_count: int = 0
    """Batches that ran and answered."""
    success_count: int = 0
    """Requests answered with outputs (Triton's count for queue and compute_* too)."""
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    batches: dict[int, BatchSizeStatistics] = field(default_factory=dict)
    """Rows in a batch → the batches of that size (at most ``max_batch_size`` entries)."""

    def add(self, other: VersionStatistics) -> None:
        """Sum ``other`` into these (two workers' counters of the same version)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        for size, batch in other.batches.items():
            self.batches.setdefault(size, BatchSizeStatistics()).add(batch)

    def copy(self) -> VersionStatistics:
        total = VersionStatistics()
        total.add(self)
        return total

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in _SCALARS}
        data["batches"] = {str(size): b.to_list() for size, b in self.batches.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionStatistics:
        stats = cls()
        for name in _SCALARS:
            setattr(stats, name, int(data.get(name, 0)))
        stats.batches = {int(size): BatchSizeStatistics(*map(int, counts))
                         for size, counts in data.get("batches", {}).items()}
        return stats


_SCALARS = tuple(f.name for f in fields(VersionStatistics) if f.name != "batches")
_SUMMED = tuple(name for name in _SCALARS if name != "last_inference_ms")


@dataclass(frozen=True, slots=True)
class StatisticsReport:
    """What one heartbeat says of the worker's statistics."""

    versions: Mapping[str, VersionStatistics] = field(default_factory=dict)
    """``name:version`` → that version's counters (copies, never changed once reported)."""
    taken_at: float = 0.0
    """Epoch seconds when the counters were read."""
    interval_s: float = 0.0
    """The worker reports counters that changed at most this long after its previous report
    (``INFERNO_STATISTICS_INTERVAL_S``; 0: only with its periodic heartbeats)."""

    def pending_s(self, now: float) -> float:
        """How long until what the worker counted after this report is reported too: 0 once
        that is due (or when changes wait for the periodic heartbeat). Never more than the
        interval, whatever the clocks of the two hosts say."""
        if not self.interval_s:
            return 0.0
        return max(0.0, min(self.taken_at + self.interval_s - now, self.interval_s))

    def to_dict(self) -> dict[str, Any]:
        return {"versions": {k: v.to_dict() for k, v in self.versions.items()},
                "taken_at": self.taken_at, "interval_s": self.interval_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatisticsReport:
        return cls({k: VersionStatistics.from_dict(v) for k, v in data["versions"].items()},
                   data["taken_at"], data["interval_s"])
