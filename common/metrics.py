"""Prometheus metric families. Each role gets its own registry-bound set, so several servers can
live in one process (tests, embedded mode shares one registry between facade and worker).

Two kinds of value:

- what a process counts itself (requests, latencies, GC pauses, its loops' health): ordinary
  prometheus-client families. With several facade processes on one port (``inferno facade
  --workers N``) they live in prometheus-client's multiprocess files
  (``PROMETHEUS_MULTIPROC_DIR``) and ``multiprocess_registry`` serves them merged, counters
  summed, so any process's ``/metrics`` tells of them all;
- what a process reads of the cluster (live workers, queue depths and consumers):
  ``ClusterGauge``, held in the process and served as this process last read it, never merged
  (every process reads the same broker and store; summing them would count N times), and whose
  label sets of versions that disappeared are removed, which multiprocess files cannot do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from common.settings import DEFAULT_BUCKETS
from common.supervisor import Supervisor

__all__ = ["ClusterGauge", "FacadeMetrics", "WorkerMetrics", "multiprocess_registry",
           "process_registry", "supervisor_for"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def process_registry() -> CollectorRegistry:
    """A process's registry, with the standard ``process_*`` families (CPU seconds, resident
    memory, open files: what operators and ``python -m bench`` read per process)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


class _MultiProcessRegistry(CollectorRegistry):
    """Serves every process's families merged from the multiprocess files, and this process's
    own ``ClusterGauge``s. The families registered here (``Counter(..., registry=this)``) are
    only checked for name clashes: their values reach ``collect`` through the files."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._merged = MultiProcessCollector(None, str(path))  # type: ignore[no-untyped-call]
        self._own: list[ClusterGauge] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        if isinstance(collector, ClusterGauge):
            self._own.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        if isinstance(collector, ClusterGauge):
            self._own.remove(collector)

    def collect(self) -> Iterable[Metric]:
        yield from self._merged.collect()  # type: ignore[no-untyped-call]
        for gauge in list(self._own):
            yield from gauge.collect()


def multiprocess_registry() -> CollectorRegistry:
    """The registry of one of several processes serving one port (``inferno facade --workers``):
    ``/metrics`` from any of them tells of all, merged from ``PROMETHEUS_MULTIPROC_DIR``, which
    must be set before prometheus-client is imported (it picks its value storage then). No
    ``process_*`` families: prometheus-client's ``ProcessCollector`` reads one process and has
    no multiprocess mode."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or not Path(path).is_dir():
        raise RuntimeError("multiprocess metrics need PROMETHEUS_MULTIPROC_DIR, a directory, "
                           "set before the process starts")
    return _MultiProcessRegistry(Path(path))


class _Child:
    __slots__ = ("_gauge", "_labels")

    def __init__(self, gauge: ClusterGauge, labels: tuple[str, ...]) -> None:
        self._gauge, self._labels = gauge, labels

    def set(self, value: float) -> None:
        self._gauge._values[self._labels] = float(value)


class ClusterGauge(Collector):
    """A gauge of something this process reads about the cluster: exported as last read, in
    every mode (see the module's docstring). ``labels(...).set(v)`` as a prometheus-client
    gauge; an unlabelled one says nothing until it is first set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object) -> _Child:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        return _Child(self, tuple(str(v) for v in values))

    def set(self, value: float) -> None:
        self.labels().set(value)

    def remove(self, *values: object) -> None:
        self._values.pop(tuple(str(v) for v in values), None)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in list(self._values.items()):  # a copy: set on the event loop
            family.add_metric(list(labels), value)
        return [family]


def supervisor_for(registry: CollectorRegistry) -> Supervisor:
    """A process's supervisor of background loops (common/supervisor.py), with the gauge
    ``inferno_loop_down{loop}``: 1 while that loop is down (failed, waiting for its restart),
    0 once it runs again. A worker has no readiness endpoint: this gauge is its readiness.
    Across the processes of ``inferno facade --workers`` it is the highest of the live ones."""
    down = Gauge("inferno_loop_down", "1 while a supervised background loop is down",
                 ["loop"], registry=registry, multiprocess_mode="livemax")
    return Supervisor(on_change=lambda loop, why: down.labels(loop).set(0 if why is None else 1))


class FacadeMetrics:
    def __init__(self, registry: CollectorRegistry,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.requests = Counter(
            "infer_requests", "Predict requests received.", ["model", "route"], registry=registry)
        self.latency = Histogram(
            "infer_latency_seconds", "Predict latency seen by the facade, parse to response.",
            ["model", "route"], buckets=buckets, registry=registry)
        self.exceptions = Counter(
            "infer_exceptions", "Predict requests that ended in an error, by error code.",
            ["model", "route", "code"], registry=registry)
        self.live_workers = ClusterGauge(
            "inferno_live_workers", "Live workers serving each model.", ["model"],
            registry=registry)
        self.queue_messages = ClusterGauge(
            "inferno_queue_messages",
            "Requests waiting in a model version's queue, not yet handed to a worker (the "
            "broker's count, its retry queue included).", ["model", "version"],
            registry=registry)
        self.queue_consumers = ClusterGauge(
            "inferno_queue_consumers", "Consumers of a model version's queue (worker runners).",
            ["model", "version"], registry=registry)
        self.dead_letter_messages = ClusterGauge(
            "inferno_dead_letter_messages",
            "Messages in the dead-letter queue inferno.dead-letter (expired, rejected and "
            "poison requests; distributed mode only).", registry=registry)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.batch_size = Histogram(
            "infer_batch_size", "Rows per batch run by the model.", ["model"],
            buckets=_BATCH_BUCKETS, registry=registry)
        self.queue_wait = Histogram(
            "infer_queue_wait_seconds", "Time from publish to the start of the request's batch.",
            ["model"], buckets=buckets, registry=registry)
        self.inference = Histogram(
            "infer_inference_seconds", "Time the model takes for one batch.",
            ["model"], buckets=buckets, registry=registry)
        self.model_errors = Counter(
            "infer_model_errors", "Batches whose model call raised.", ["model", "error"],
            registry=registry)
        self.expired = Counter(
            "infer_expired",
            "Requests dropped unanswered: their deadline passed, or their caller left.",
            ["model"], registry=registry)
        self.model_loaded = Gauge(
            "model_loaded", "1 while this process has the model version loaded.",
            ["model", "version"], registry=registry)
