"""Triton's statistics extension: the live workers' counters, summed, in Triton's words.

Workers count (``worker/statistics.py`` says what each field measures) and report their counters
in their heartbeats; ``model_statistics`` sums what the live workers report, so the counts are
those since each live worker started: a worker that stops takes its counts out of the sum. The
REST routes (``facade.v2_routes``) answer its dictionary as JSON and ``ModelStatistics`` over
gRPC parses the same dictionary into a ``ModelStatisticsResponse``.

Which versions are listed: every version of the repository (a worker loads nothing else), with
zero counts where no live worker ran it, where Triton lists only the versions it has loaded; a
model or version the repository lacks is ``ModelNotFound``.

A call re-reads the state store rather than the facade's cached view (whose workers are re-read
every half heartbeat interval), and when a worker's last report is younger than its
``INFERNO_STATISTICS_INTERVAL_S`` it waits until that worker's next report is due and reads
again: a worker counts a request before replying and reports changes within that interval, so a
call made after a request's answer counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from common.errors import StateUnavailable
from common.model.repository import ModelRepository
from common.state.statistics import VersionStatistics
from common.state.store import WorkerInfo
from facade.cluster_view import ClusterView

__all__ = ["model_statistics", "summed"]

log = logging.getLogger(__name__)

REPORT_SLACK_S = 0.02
"""Added to a worker's due report: its store write and its event loop's lag."""
_NONE = VersionStatistics()


async def model_statistics(view: ClusterView, name: str | None = None,
                           version: int | None = None) -> dict[str, Any]:
    """Triton's statistics response (``{"model_stats": [...]}``) for every version of every
    model (``name`` None), of one model (``version`` None), or of one version."""
    versions = _selected(view.repository, name, version)
    await _read_reports(view)
    totals = summed(view.workers)
    return {"model_stats": [_model_stat(n, v, totals.get(f"{n}:{v}", _NONE))
                            for n, v in versions]}


def summed(workers: Iterable[WorkerInfo]) -> dict[str, VersionStatistics]:
    """``name:version`` → the counters the workers report for it, added up."""
    totals: dict[str, VersionStatistics] = {}
    for worker in workers:
        for key, stats in worker.statistics.versions.items():
            total = totals.get(key)
            if total is None:
                totals[key] = stats.copy()
            else:
                total.add(stats)
    return totals


def _selected(repository: ModelRepository, name: str | None, version: int | None
              ) -> list[tuple[str, int]]:
    if name is None:
        return [(n, v) for n in repository.names() for v in sorted(repository.versions(n))]
    if version is None:
        return [(name, v) for v in sorted(repository.versions(name))]
    repository.get(name, version)  # ModelNotFound for a version it lacks
    return [(name, version)]


async def _read_reports(view: ClusterView) -> None:
    """The workers' latest reports into the view, and their next ones where they are due."""
    if not await _refresh(view):
        return
    now = time.time()
    due = max((w.statistics.pending_s(now) for w in view.workers), default=0.0)
    if due:
        await asyncio.sleep(due + REPORT_SLACK_S)
        await _refresh(view)


async def _refresh(view: ClusterView) -> bool:
    try:
        await view.refresh()
    except StateUnavailable as exc:
        # The view's last reading is the best there is; its own refresh loop says the rest.
        log.warning("statistics from the last known state: %s", exc)
        return False
    return True


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def _model_stat(name: str, version: int, stats: VersionStatistics) -> dict[str, Any]:
    """One version's entry of Triton's response (its JSON form, which the gRPC message
    parses from): queue and compute times count the successful requests, as Triton's do."""
    done = stats.success_count
    return {
        "name": name, "version": str(version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(done, stats.success_ns),
            "fail": _duration(stats.fail_count, stats.fail_ns),
            "queue": _duration(done, stats.queue_ns),
            "compute_input": _duration(done, stats.compute_input_ns),
            "compute_infer": _duration(done, stats.compute_infer_ns),
            "compute_output": _duration(done, stats.compute_output_ns),
            # No response cache: nothing hits or misses one.
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [{"batch_size": size,
                         "compute_input": _duration(b.count, b.compute_input_ns),
                         "compute_infer": _duration(b.count, b.compute_infer_ns),
                         "compute_output": _duration(b.count, b.compute_output_ns)}
                        for size, b in sorted(stats.batches.items())],
        # Triton's fields for memory use and decoupled models' responses: none reported.
        "memory_usage": [],
        "response_stats": {},
    }
