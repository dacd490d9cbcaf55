"""The cyclic garbage collector, kept off the serving path's tail.

After importing torch and Inferno a process tracks about 200k objects; one full collection of
them took 87 ms on the reference machine, and under load every such collection was a p99
outlier. ``settle`` runs once start-up and each model load are done: one full collection, then
``gc.freeze()`` moves every survivor to the permanent generation, which later collections never
traverse. What a server allocates afterwards is mostly short-lived (requests), so the collections
that remain are small.

``GcPauses`` reports every collection's pause, by generation, in ``inferno_gc_pause_seconds``.
A collection can start at any allocation, also inside a lock, so its callback takes none: it
appends to a deque (atomic in CPython), and ordinary code moves what has queued into the
histogram, which takes prometheus-client's locks (one per process in multiprocess mode: a
callback that observed directly deadlocked there, prometheus/client_python#322).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["GcPauses", "settle"]

log = logging.getLogger(__name__)

_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
FLUSH_S = 1.0
"""How often the queued pauses reach the histogram: what a process in multiprocess mode
exports of the others is at most this old (a scrape moves this process's own first)."""
MAX_QUEUED = 16_384
"""Pauses waiting for a flush; more in one second than this drops the oldest."""


def settle() -> None:
    """Collect everything once, then exempt what survived from every later collection."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("heap settled: %d objects frozen in %.0f ms", gc.get_freeze_count(),
             (time.perf_counter() - started) * 1000)


class GcPauses(Collector):
    """Observes every garbage collection of this process while started; registered in
    ``registry`` as a collector whose ``collect`` first flushes what has queued."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._histogram = Histogram("inferno_gc_pause_seconds",
                                    "Pauses of the cyclic garbage collector, by generation.",
                                    ["generation"], buckets=_PAUSE_BUCKETS, registry=None)
        self._by_generation = [self._histogram.labels(str(g)) for g in range(3)]
        self._queued: deque[tuple[int, float]] = deque(maxlen=MAX_QUEUED)
        self._started = 0.0
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None
        registry.register(self)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._stopped.clear()
        self._flusher = threading.Thread(target=self._flush_every_second, name="gc-pauses",
                                         daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._stopped.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()

    def flush(self) -> None:
        """Move the queued pauses into the histogram (ordinary code: it may take locks)."""
        while True:
            try:
                generation, seconds = self._queued.popleft()
            except IndexError:
                return
            self._by_generation[generation].observe(seconds)

    def describe(self) -> Iterable[Metric]:
        return self._histogram.describe()

    def collect(self) -> Iterable[Metric]:
        self.flush()
        return self._histogram.collect()

    def _flush_every_second(self) -> None:
        while not self._stopped.wait(FLUSH_S):
            self.flush()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Inside a collection, at any allocation of any thread: no lock, no metric, no logging.
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._queued.append((info["generation"], time.perf_counter() - self._started))
