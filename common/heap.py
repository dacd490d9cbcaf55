"""The cyclic garbage collector, kept off the serving path's tail.

After importing torch and Inferno a process tracks about 200k objects; one full collection of
them took 87 ms on the reference machine, and under load every such collection was a p99
outlier. ``settle`` runs once start-up and each model load are done: one full collection, then
``gc.freeze()`` moves every survivor to the permanent generation, which later collections never
traverse. What a server allocates afterwards is mostly short-lived (requests), so the collections
that remain are small.

``GcPauses`` reports every collection's pause, by generation, in ``inferno_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["GcPauses", "settle"]

log = logging.getLogger(__name__)

_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def settle() -> None:
    """Collect everything once, then exempt what survived from every later collection."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("heap settled: %d objects frozen in %.0f ms", gc.get_freeze_count(),
             (time.perf_counter() - started) * 1000)


class GcPauses:
    """Observes every garbage collection of this process while started."""

    def __init__(self, registry: CollectorRegistry) -> None:
        histogram = Histogram("inferno_gc_pause_seconds",
                              "Pauses of the cyclic garbage collector, by generation.",
                              ["generation"], buckets=_PAUSE_BUCKETS, registry=registry)
        self._by_generation = [histogram.labels(str(g)) for g in range(3)]
        self._started = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)
