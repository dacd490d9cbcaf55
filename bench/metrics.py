"""The few server metrics the benchmark reads, from Prometheus text, and their deltas.

Counters and histogram sums only grow, so a level's mean batch size and model time per batch are
differences between a scrape at the start and one at the end of its window. Which process exposes
a family depends on the mode: in embedded mode the one ``/metrics`` has them all; in distributed
mode the batch families live on each worker's metrics port and the request latency on
each facade's ``/metrics``. A snapshot is therefore the sum over every endpoint of a run
(:func:`total`): a family is counted where it exists, and exists in one kind of process only.
(``infer_queue_wait_seconds`` is not read: over AMQP the publish time is the message's
``timestamp`` property, whole seconds, so the worker's queue wait is off by up to a second.)
Every process also exports ``process_cpu_seconds_total``; it is counted by role, which the
families an endpoint declares tell: a facade's, a worker's, or both (the embedded server).
This module has no dependencies: the load-generator process imports it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, fields

__all__ = ["Snapshot", "Window", "parse", "total"]

_FAMILIES = {
    # worker families
    "infer_batch_size_sum": "batch_rows",
    "infer_batch_size_count": "batches",
    "infer_inference_seconds_sum": "infer_seconds",
    "infer_inference_seconds_count": "infer_batches",
    # facade families
    "infer_latency_seconds_sum": "server_seconds",
    "infer_latency_seconds_count": "server_requests",
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Totals for one model at one moment (all label sets of that model summed)."""

    batch_rows: float = 0.0
    batches: float = 0.0
    infer_seconds: float = 0.0
    infer_batches: float = 0.0
    server_seconds: float = 0.0
    server_requests: float = 0.0
    facade_cpu: float = 0.0
    """CPU seconds of facade processes."""
    worker_cpu: float = 0.0
    """CPU seconds of worker processes."""
    embedded_cpu: float = 0.0
    """CPU seconds of embedded servers (facade and worker in one process)."""


_FACADE_FAMILY = "# HELP infer_latency_seconds "
_WORKER_FAMILY = "# HELP infer_batch_size "
_CPU = "process_cpu_seconds_total "


def _role_cpu(text: str) -> str:
    facade, worker = _FACADE_FAMILY in text, _WORKER_FAMILY in text
    return "embedded_cpu" if facade and worker else "facade_cpu" if facade else "worker_cpu"


def parse(text: str, model: str) -> Snapshot:
    """The totals of ``model``'s families in one endpoint's Prometheus text."""
    wanted = f'model="{model}"'
    totals = dict.fromkeys((f.name for f in fields(Snapshot)), 0.0)
    for line in text.splitlines():
        if line.startswith(_CPU):
            with contextlib.suppress(IndexError, ValueError):
                totals[_role_cpu(text)] += float(line.split()[1])
            continue
        if not line.startswith("infer_"):
            continue
        name, brace, rest = line.partition("{")
        field = _FAMILIES.get(name)
        if field is None or not brace:
            continue
        labels, _, value = rest.rpartition("}")
        if wanted not in labels.split(","):
            continue
        try:
            totals[field] += float(value.split()[0])
        except (IndexError, ValueError):
            continue
    return Snapshot(**totals)


def total(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Field-wise sum: the cluster's totals from each endpoint's."""
    sums = dict.fromkeys((f.name for f in fields(Snapshot)), 0.0)
    for snapshot in snapshots:
        for name in sums:
            sums[name] += getattr(snapshot, name)
    return Snapshot(**sums)


def _per(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return None if denominator <= 0 else scale * numerator / denominator


@dataclass(frozen=True, slots=True)
class Window:
    """What the server did between two snapshots."""

    before: Snapshot
    after: Snapshot

    def _delta(self, name: str) -> float:
        return float(getattr(self.after, name) - getattr(self.before, name))

    @property
    def batches(self) -> int:
        return round(self._delta("batches"))

    @property
    def mean_batch(self) -> float | None:
        """Rows per model call; ``None`` when no batch ran."""
        return _per(self._delta("batch_rows"), self._delta("batches"))

    @property
    def infer_ms_per_batch(self) -> float | None:
        """Mean model time per batch in milliseconds; ``None`` when no batch ran."""
        return _per(self._delta("infer_seconds"), self._delta("infer_batches"), 1000.0)

    @property
    def infer_seconds(self) -> float:
        """Model time summed over every batch (and every worker) in the window."""
        return self._delta("infer_seconds")

    def cpu_ms_per_request(self, role: str, requests: int) -> float | None:
        """CPU milliseconds the processes of ``role`` (``facade``, ``worker``, ``embedded``)
        spent per request answered in the window; ``None`` when no such process reported."""
        cpu = self._delta(f"{role}_cpu")
        return _per(cpu, requests, 1000.0) if cpu > 0 else None

    @property
    def server_ms(self) -> float | None:
        """Mean predict latency the facades saw (parse to response), in milliseconds."""
        return _per(self._delta("server_seconds"), self._delta("server_requests"), 1000.0)
