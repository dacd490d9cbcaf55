"""The garbage collector's pauses, observed (common/heap.py)."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from common.heap import GcPauses


def pauses(registry: CollectorRegistry, generation: int) -> float:
    return registry.get_sample_value("inferno_gc_pause_seconds_count",
                                     {"generation": str(generation)}) or 0.0


def test_every_collection_is_observed_by_generation_while_started() -> None:
    registry = CollectorRegistry()
    watch = GcPauses(registry)
    watch.start()
    try:
        gc.collect(0)
        gc.collect(2)
        assert pauses(registry, 0) >= 1 and pauses(registry, 2) >= 1
        assert (registry.get_sample_value("inferno_gc_pause_seconds_sum", {"generation": "2"})
                or 0.0) > 0
    finally:
        watch.stop()
    before = pauses(registry, 2)
    gc.collect(2)
    assert pauses(registry, 2) == before, "a stopped watch observes nothing"
    watch.stop()  # twice is harmless
