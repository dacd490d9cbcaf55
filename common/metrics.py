"""Prometheus metric families. Each role gets its own registry-bound set, so several servers can
live in one process (tests, embedded mode shares one registry between facade and worker)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from common.config import DEFAULT_BUCKETS
from common.tasks import Supervisor

__all__ = ["FacadeMetrics", "WorkerMetrics", "process_registry", "supervisor_for"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def process_registry() -> CollectorRegistry:
    """A process's registry, with the standard ``process_*`` families (CPU seconds, resident
    memory, open files: what operators and ``python -m bench`` read per process)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def supervisor_for(registry: CollectorRegistry) -> Supervisor:
    """A process's supervisor of background loops (common/tasks.py), with the gauge
    ``inferno_loop_down{loop}``: 1 while that loop is down (failed, waiting for its restart),
    0 once it runs again. A worker has no readiness endpoint: this gauge is its readiness."""
    down = Gauge("inferno_loop_down", "1 while a supervised background loop is down",
                 ["loop"], registry=registry)
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
        self.live_workers = Gauge(
            "inferno_live_workers", "Live workers serving each model.", ["model"],
            registry=registry)


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
