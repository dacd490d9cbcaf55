"""Triton's statistics as the worker counts them: the batcher's counts through a real batcher
(the harness of conftest.py, batches held at the probe's gate), and when ``WorkerStatistics``
says a heartbeat should report them."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from common.errors import DeadlineExceeded, ModelFailed
from common.state.statistics import BatchSizeStatistics
from tests.unit.conftest import Harness, MakeBatcher
from worker.statistics import WorkerStatistics


async def held(h: Harness, *rows: int, value: float = 1.0) -> list[asyncio.Task[object]]:
    """Requests of ``rows`` each: the first holds the only slot at the probe's closed gate,
    the others (of ``value``) wait behind it, to form the next batch."""
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": np.ones((rows[0], 2), np.float32)}))
    await asyncio.wait_for(h.probe.started.get(), 5)
    rest = [asyncio.create_task(h.infer({"x": np.full((r, 2), value, np.float32)}))
            for r in rows[1:]]
    await h.wait_delivered(len(rows))
    return [first, *rest]  # type: ignore[list-item]


async def test_a_batch_counts_its_rows_once_and_each_request_with_the_batchs_times(
        make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", max_batch_size=8, max_concurrency=1)
    tasks = await held(h, 1, 1, 2, 1)  # a batch of 1, then one of 4 rows from 3 requests
    h.probe.gate.set()
    await asyncio.gather(*tasks)
    assert h.probe.batch_sizes == [1, 4]

    counted = h.statistics.statistics
    assert (counted.inference_count, counted.execution_count) == (5, 2)
    assert (counted.success_count, counted.fail_count) == (4, 0)
    assert counted.batches.keys() == {1, 4}
    one, four = counted.batches[1], counted.batches[4]
    assert (one.count, four.count) == (1, 1)
    # Each request carries its batch's compute times: 1 request ran in the first, 3 in the
    # second.
    assert counted.compute_infer_ns == one.compute_infer_ns + 3 * four.compute_infer_ns
    assert counted.compute_input_ns == one.compute_input_ns + 3 * four.compute_input_ns
    assert counted.compute_output_ns == one.compute_output_ns + 3 * four.compute_output_ns
    # The first batch was held at the gate inside the model: its infer time holds that wait,
    # which the queued requests spent in the queue.
    assert one.compute_infer_ns > 0 and counted.queue_ns > 0
    # A request's time is its queue time and its batch's compute times, nothing else.
    assert counted.success_ns == (counted.queue_ns + counted.compute_input_ns
                                  + counted.compute_infer_ns + counted.compute_output_ns)
    assert abs(counted.last_inference_ms - time.time() * 1000) < 60_000


async def test_queue_time_counts_from_the_publish(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum")
    await h.request({"x": [[1.0, 2.0]]}, published=time.time() - 2.0)
    counted = h.statistics.statistics
    assert 2e9 <= counted.queue_ns < 60e9  # two seconds since the publish, not since arrival
    assert counted.success_ns >= counted.queue_ns


async def test_a_failed_batch_counts_each_request_as_failed_and_no_execution(
        make_batcher: MakeBatcher) -> None:
    h = await make_batcher("failing", max_batch_size=8, max_concurrency=1)
    first, *failing = await held(h, 1, 1, 1, value=-1.0)
    h.probe.gate.set()
    await first
    for task in failing:  # one batch, which the model refuses
        with pytest.raises(ModelFailed):
            await task
    # The held one ran; the failed batch is not an execution and counts no rows.
    counted = h.statistics.statistics
    assert (counted.success_count, counted.fail_count) == (1, 2)
    assert (counted.inference_count, counted.execution_count) == (1, 1)
    assert counted.batches.keys() == {1}
    assert counted.fail_ns > 0


async def test_an_expired_request_is_counted_as_failed_without_a_batch(
        make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", max_concurrency=1)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": [[1.0, 2.0]]}))
    await asyncio.wait_for(h.probe.started.get(), 5)
    with pytest.raises(DeadlineExceeded):
        await h.infer({"x": [[3.0, 4.0]]}, timeout=0.05)
    h.probe.gate.set()
    await first
    await h.infer({"x": [[5.0, 6.0]]})  # the batch after the drop: the drop was counted before
    counted = h.statistics.statistics
    assert (counted.success_count, counted.fail_count, counted.execution_count) == (2, 1, 2)
    assert counted.fail_ns >= 0.05e9  # its time in the queue, up to its deadline and past it


def test_counters_of_a_version_are_one_object_across_loads() -> None:
    statistics = WorkerStatistics()
    assert statistics.counters("sum", 1) is statistics.counters("sum", 1)
    assert statistics.counters("sum", 1) is not statistics.counters("sum", 2)


async def test_a_report_copies_the_counters_and_says_when_it_was_taken() -> None:
    statistics = WorkerStatistics(interval_s=0.05)
    counters = statistics.counters("sum", 1)
    counters.succeeded(2, [10, 20], 1, 2, 3)
    report = statistics.report()
    assert abs(report.taken_at - time.time()) < 60 and report.interval_s == 0.05
    reported = report.versions["sum:1"]
    assert (reported.inference_count, reported.success_count) == (2, 2)
    assert reported.batches == {2: BatchSizeStatistics(1, 1, 2, 3)}
    counters.succeeded(2, [10, 20], 1, 2, 3)
    assert reported.inference_count == 2, "a report never changes once taken"


async def test_a_change_with_no_report_in_its_interval_is_reported_at_once() -> None:
    statistics = WorkerStatistics(interval_s=0.05)  # nothing reported yet
    statistics.counters("sum", 1).failed([5])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await statistics.report_due(timeout=30)
    assert loop.time() - began < 0.04


async def test_changes_soon_after_a_report_wait_out_the_interval() -> None:
    statistics = WorkerStatistics(interval_s=0.2)
    loop = asyncio.get_running_loop()
    statistics.report()
    reported = loop.time()
    statistics.counters("sum", 1).failed([5])
    await statistics.report_due(timeout=30)
    assert loop.time() - reported >= 0.2  # coalesced: one report per interval


async def test_without_changes_only_the_periodic_heartbeat_is_due() -> None:
    statistics = WorkerStatistics(interval_s=0.05)
    statistics.report()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await statistics.report_due(timeout=0.1)
    assert loop.time() - began >= 0.1


async def test_an_interval_of_zero_reports_with_the_periodic_heartbeat_only() -> None:
    statistics = WorkerStatistics(interval_s=0)
    statistics.counters("sum", 1).failed([5])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await statistics.report_due(timeout=0.1)
    assert loop.time() - began >= 0.1
    assert statistics.report().interval_s == 0
