"""The few server metrics the benchmark reads, from Prometheus text, and their deltas.

Counters and histogram sums only grow, so a level's mean batch size and model time per batch are
differences between a scrape at the start and one at the end of its window. This module has no
dependencies: the load-generator process imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Snapshot", "Window", "parse"]

_FAMILIES = {
    "infer_batch_size_sum": "batch_rows",
    "infer_batch_size_count": "batches",
    "infer_inference_seconds_sum": "infer_seconds",
    "infer_inference_seconds_count": "infer_batches",
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Totals for one model at one moment (all label sets of that model summed)."""

    batch_rows: float = 0.0
    batches: float = 0.0
    infer_seconds: float = 0.0
    infer_batches: float = 0.0


def parse(text: str, model: str) -> Snapshot:
    """The ``infer_batch_size`` and ``infer_inference_seconds`` totals of ``model``."""
    wanted = f'model="{model}"'
    totals = dict.fromkeys(_FAMILIES.values(), 0.0)
    for line in text.splitlines():
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


@dataclass(frozen=True, slots=True)
class Window:
    """What the server did between two snapshots."""

    before: Snapshot
    after: Snapshot

    @property
    def batches(self) -> int:
        return round(self.after.batches - self.before.batches)

    @property
    def mean_batch(self) -> float | None:
        """Rows per model call; ``None`` when no batch ran."""
        batches = self.after.batches - self.before.batches
        if batches <= 0:
            return None
        return (self.after.batch_rows - self.before.batch_rows) / batches

    @property
    def infer_ms_per_batch(self) -> float | None:
        """Mean model time per batch in milliseconds; ``None`` when no batch ran."""
        batches = self.after.infer_batches - self.before.infer_batches
        if batches <= 0:
            return None
        return 1000.0 * (self.after.infer_seconds - self.before.infer_seconds) / batches
