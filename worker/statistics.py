"""Triton's statistics, counted by the worker: per model version, cumulative since it started.

The batcher counts into a version's ``VersionCounters`` on the event loop, once per batch (the
model's thread only measures; nothing here takes a lock). What each count means, Triton's
meaning measured where the batcher can:

- ``success``: requests answered with outputs, and their time from publish (the request's
  ``inferno-published``; its arrival in this worker without one) to their replies being ready;
- ``fail``: requests answered with an error (the model raised, or the worker stopped during the
  batch), and requests dropped because their deadline passed or their caller left before their
  batch ran; the same span, to the failure or the drop;
- ``queue``: publish (or arrival) to the start of its batch;
- ``compute_input``: the start of the batch to the model's thread taking it: the batch's parts
  gathered and the hand-off to the thread (none when the model runs on the event loop);
- ``compute_infer``: ``Runtime.predict_parts``, which concatenates the inputs, converts numpy and
  torch and copies to and from the device around the model call: the runtime does these in one
  call, so they are counted here, not in ``compute_input`` and ``compute_output``;
- ``compute_output``: the model's return to the replies being ready: the hand-off back to the
  event loop and the split of the outputs by rows;
- ``inference_count`` (rows) and ``execution_count`` (batches) of the answered batches, and
  per batch size the batches and their three compute times.

As in Triton, ``queue`` and ``compute_*`` count answered requests, each with its batch's compute
times. ``WorkerStatistics`` holds every version's counters (a version unloaded and loaded again
goes on counting) and says when a heartbeat should report them (``report_due``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from common.state.statistics import BatchSizeStatistics, StatisticsReport, VersionStatistics

__all__ = ["VersionCounters", "WorkerStatistics"]


class VersionCounters:
    """What the batcher of one version counts (on the event loop)."""

    __slots__ = ("_changed", "_stats")

    def __init__(self, stats: VersionStatistics | None = None,
                 changed: asyncio.Event | None = None) -> None:
        self._stats = stats if stats is not None else VersionStatistics()
        self._changed = changed if changed is not None else asyncio.Event()

    @property
    def statistics(self) -> VersionStatistics:
        return self._stats

    def succeeded(self, rows: int, queued_ns: Sequence[int], input_ns: int, infer_ns: int,
                  output_ns: int) -> None:
        """A batch of ``rows`` answered: each request's queue time, the batch's compute times."""
        stats, requests, queued = self._stats, len(queued_ns), sum(queued_ns)
        stats.inference_count += rows
        stats.execution_count += 1
        stats.success_count += requests
        stats.success_ns += queued + requests * (input_ns + infer_ns + output_ns)
        stats.queue_ns += queued
        stats.compute_input_ns += requests * input_ns
        stats.compute_infer_ns += requests * infer_ns
        stats.compute_output_ns += requests * output_ns
        size = stats.batches.get(rows)
        if size is None:
            size = stats.batches[rows] = BatchSizeStatistics()
        size.count += 1
        size.compute_input_ns += input_ns
        size.compute_infer_ns += infer_ns
        size.compute_output_ns += output_ns
        self._counted()

    def failed(self, queued_ns: Sequence[int], ran_ns: int = 0) -> None:
        """Requests that failed after ``queued_ns`` each, and ``ran_ns`` in their batch (0 for
        requests dropped before one)."""
        self._stats.fail_count += len(queued_ns)
        self._stats.fail_ns += sum(queued_ns) + len(queued_ns) * ran_ns
        self._counted()

    def _counted(self) -> None:
        self._stats.last_inference_ms = time.time_ns() // 1_000_000
        self._changed.set()


class WorkerStatistics:
    """Every version's counters in this worker, and when its heartbeat should report them."""

    def __init__(self, interval_s: float = 0.0) -> None:
        """``interval_s``: report changes at most this often (0: with the periodic heartbeats
        only; ``INFERNO_STATISTICS_INTERVAL_S``)."""
        self._interval = interval_s
        self._versions: dict[str, VersionCounters] = {}
        self._changed = asyncio.Event()
        self._reported_at = float("-inf")
        """Event-loop time of the last report."""

    def counters(self, name: str, version: int) -> VersionCounters:
        """The counters of one version (the same object for every load of it)."""
        key = f"{name}:{version}"
        counters = self._versions.get(key)
        if counters is None:
            counters = self._versions[key] = VersionCounters(changed=self._changed)
        return counters

    def report(self) -> StatisticsReport:
        """What the heartbeat being written carries; changes from now on are for the next."""
        self._changed.clear()
        self._reported_at = asyncio.get_running_loop().time()
        return StatisticsReport({k: c.statistics.copy() for k, c in self._versions.items()},
                                time.time(), self._interval)

    async def report_due(self, timeout: float) -> None:
        """Until a heartbeat should report changed counters (no sooner than the interval after
        the last report), or ``timeout`` has passed: the periodic heartbeat."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if not self._interval:
                    await asyncio.Future()  # only the periodic heartbeat reports
                await self._changed.wait()
                # Coalesced: under load one report per interval, not one per batch.
                wait = self._reported_at + self._interval - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
