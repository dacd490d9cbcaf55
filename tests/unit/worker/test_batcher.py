"""The batcher over a real runtime and a real in-memory broker (see conftest.py's harness).

Where a test must hold a batch, it closes the probe's gate (the model call waits, holding its
runner slot) and awaits ``probe.started`` / ``wait_delivered`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from common.errors import DeadlineExceeded, ModelFailed, WorkerFailed
from common.transport.broker import Delivery
from common.wire.messages import PredictReply

MakeBatcher = Callable[..., Awaitable[Any]]


def rows(count: int, width: int, base: float) -> np.ndarray:
    """``count`` distinct float32 rows of ``width`` values starting at ``base``."""
    return np.arange(count * width, dtype=np.float32).reshape(count, width) + np.float32(base)


async def started(harness: Any) -> int:
    return await asyncio.wait_for(harness.probe.started.get(), 5)


# --- batching and splitting -----------------------------------------------------------------


async def test_concurrent_requests_share_batches_and_each_caller_gets_its_own_rows(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_batch_size=16)
    inputs = [{"x": rows(1 + i % 3, 3, 1000 * i)} for i in range(64)]

    outputs = await asyncio.wait_for(asyncio.gather(*(h.infer(i) for i in inputs)), 10)

    for given, got in zip(inputs, outputs, strict=True):
        assert got["total"].dtype == np.float32
        np.testing.assert_array_equal(got["total"], given["x"].sum(axis=1))
    sizes = h.probe.batch_sizes
    total_rows = sum(i["x"].shape[0] for i in inputs)
    assert max(sizes) > 1, "64 concurrent requests were never batched"
    assert max(sizes) <= 16
    assert sum(sizes) == total_rows
    # The runtime gets each request's array, concatenated where the rows go (worker/runtime.py).
    assert sum(h.probe.requests) == len(inputs) and max(h.probe.requests) > 1
    assert h.metric("infer_batch_size_count") == len(sizes)
    assert h.metric("infer_batch_size_sum") == total_rows


async def test_multi_row_requests_count_their_rows_against_max_batch_size(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_batch_size=5)
    inputs = [{"x": rows(1 + i % 5, 2, 100 * i)} for i in range(30)]

    outputs = await asyncio.wait_for(asyncio.gather(*(h.infer(i) for i in inputs)), 10)

    for given, got in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(got["total"], given["x"].sum(axis=1))
    sizes = h.probe.batch_sizes
    assert max(sizes) <= 5, f"a batch exceeded max_batch_size: {sizes}"
    assert sum(sizes) == sum(1 + i % 5 for i in range(30))
    assert any(size > 1 for size in sizes)
    # The histogram agrees with what the model saw: nothing above 5 rows.
    assert h.metric("infer_batch_size_bucket", le="4.0") + sizes.count(5) == len(sizes)


async def test_requests_with_different_non_batch_shapes_never_share_a_batch(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_batch_size=16)
    # n=3 and n=5 interleaved: concatenating them would raise inside the batcher.
    inputs = [{"x": rows(1 + i % 2, 3 if i % 4 < 2 else 5, 10 * i)} for i in range(40)]

    outputs = await asyncio.wait_for(asyncio.gather(*(h.infer(i) for i in inputs)), 10)

    for given, got in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(got["total"], given["x"].sum(axis=1))
    widths = [call["x"].shape[1] for call in h.probe.calls]
    assert set(widths) == {3, 5}
    assert any(size > 2 for size in h.probe.batch_sizes), "equal shapes were still batched"


async def test_requested_outputs_are_the_only_ones_returned(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("echo16")
    bf16 = np.array([[0x3F80, 0xC000]], np.uint16)  # 1.0, -2.0
    fp16 = np.array([[0.5, 3.0]], np.float16)
    a, b = await asyncio.gather(
        h.infer({"bf16": bf16, "fp16": fp16}, outputs=["fp16_f32"]),
        h.infer({"bf16": bf16, "fp16": fp16}, outputs=["bf16", "fp16"]),
    )
    assert list(a) == ["fp16_f32"]
    np.testing.assert_array_equal(a["fp16_f32"], [[0.5, 3.0]])
    assert sorted(b) == ["bf16", "fp16"]
    np.testing.assert_array_equal(b["bf16"], bf16)


async def test_queue_wait_is_observed_for_published_requests(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum")
    await h.infer({"x": [[1.0]]}, published=time.time())
    await h.infer({"x": [[1.0]]})  # published unknown (0): not observed
    assert h.metric("infer_queue_wait_seconds_count") == 1


# --- failures ---------------------------------------------------------------------------------


async def test_a_model_exception_fails_only_its_own_batch(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("failing", max_batch_size=1)  # one request per batch
    inputs = [{"x": np.full((1, 2), -1.0 if i == 3 else i, np.float32)} for i in range(10)]

    results = await asyncio.wait_for(
        asyncio.gather(*(h.infer(i) for i in inputs), return_exceptions=True), 10)

    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, ModelFailed)
            assert result.code == "model_failed"
            assert "ValueError" in result.message
            assert "negative input" in result.message
            assert "failing" in result.message
        else:
            assert not isinstance(result, BaseException), result
            np.testing.assert_array_equal(result["total"], [2.0 * i])
    assert h.metric("infer_model_errors_total", error="ValueError") == 1
    np.testing.assert_array_equal((await h.infer({"x": [[4.0, 5.0]]}))["total"], [9.0])


async def test_a_failed_batch_fails_all_its_requests_and_the_next_batch_succeeds(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("failing", max_batch_size=8, max_concurrency=1)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": [[1.0, 1.0]]}))
    await started(h)
    # Both wait behind the held slot, so they form the next batch together.
    bad = asyncio.create_task(h.infer({"x": [[-1.0, 0.0]]}))
    good = asyncio.create_task(h.infer({"x": [[2.0, 2.0]]}))
    await h.wait_delivered(3)
    h.probe.gate.set()

    np.testing.assert_array_equal((await first)["total"], [2.0])
    for task in (bad, good):
        with pytest.raises(ModelFailed, match="ValueError: negative input"):
            await task
    np.testing.assert_array_equal((await h.infer({"x": [[3.0, 3.0]]}))["total"], [6.0])
    assert h.probe.batch_sizes == [1, 2, 1]


async def test_a_wrong_row_count_fails_the_batch_naming_both_counts(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("badrows")
    with pytest.raises(ModelFailed) as info:
        await h.infer({"x": rows(2, 3, 0)})
    message = info.value.message
    assert "3 rows" in message and "batch of 2 rows" in message, message
    assert "'total'" in message
    assert h.metric("infer_model_errors_total", error="ModelFailed") == 1


# --- deadlines ----------------------------------------------------------------------------------


async def test_a_request_that_expires_while_waiting_is_never_computed(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_concurrency=1)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": [[1.0, 2.0]]}))
    await started(h)  # the only slot is held

    # Handed to the batcher at once (free prefetch), then stuck behind the held slot.
    with pytest.raises(DeadlineExceeded):
        await h.infer({"x": [[-5.0, -5.0]]}, timeout=0.05)
    assert h.delivered == 2
    h.probe.gate.set()

    np.testing.assert_array_equal((await first)["total"], [3.0])
    np.testing.assert_array_equal((await h.infer({"x": [[7.0, 7.0]]}))["total"], [14.0])
    assert h.probe.batch_sizes == [1, 1]
    assert all((call["x"] != -5.0).all() for call in h.probe.calls), "expired request was run"
    assert h.metric("infer_expired_total") == 1


# --- concurrency and wait modes -------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 3])
async def test_no_more_than_max_concurrency_batches_run_at_once(
    make_batcher: MakeBatcher, slots: int
) -> None:
    # More executor threads than slots: any limit seen comes from the batcher.
    h = await make_batcher("slow", max_batch_size=1, max_concurrency=slots, threads=8)
    count = 3 * slots + 2
    outputs = await asyncio.wait_for(asyncio.gather(
        *(h.infer({"x": [[float(i)]], "delay_ms": [30.0]}) for i in range(count))), 10)
    for i, got in enumerate(outputs):
        np.testing.assert_array_equal(got["y"], [[float(i)]])
    assert h.probe.max_active == slots
    assert len(h.probe.calls) == count


async def test_a_full_batch_is_staged_and_starts_when_the_thread_frees_without_the_event_loop(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_concurrency=1, max_batch_size=2)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": [[1.0]]}))
    await started(h)  # holds the only thread
    others = [asyncio.create_task(h.infer({"x": [[float(i)]]})) for i in (2, 3)]
    await h.executor.wait_handed(2)  # full, so staged: handed to the threads while it is busy
    assert len(h.probe.calls) == 1 and h.probe.entered.get(timeout=1) == 1
    h.probe.gate.set()
    # The event loop blocked (a synchronous wait): only the threads can start the staged batch.
    assert h.probe.entered.get(timeout=5) == 2
    np.testing.assert_array_equal((await first)["total"], [1.0])
    assert [float((await t)["total"][0]) for t in others] == [2.0, 3.0]
    assert h.probe.max_active == 1


async def test_a_batch_that_could_still_grow_is_not_staged(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", max_concurrency=1, max_batch_size=4)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer({"x": [[1.0]]}))
    await started(h)
    others = [asyncio.create_task(h.infer({"x": [[float(i)]]})) for i in (2, 3)]
    await h.wait_delivered(3)
    # A negative check (nothing to await): staged, it would be handed over within this window.
    await asyncio.sleep(0.05)
    assert h.executor.handed == 1
    h.probe.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *others), 5)
    assert h.probe.batch_sizes == [1, 2]


async def test_greedy_runs_a_lone_request_at_once(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", wait="greedy", max_batch_latency_ms=10_000)
    began = time.monotonic()
    await h.infer({"x": [[1.0]]})
    assert time.monotonic() - began < 1.0, "greedy mode waited for the batch latency"


async def test_fill_waits_for_a_full_batch(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", wait="fill", max_batch_size=4, max_batch_latency_ms=10_000)
    first = asyncio.create_task(h.infer({"x": [[1.0]]}))
    await h.wait_delivered(1)
    # A negative check (nothing to await): greedy mode would have run it within this window.
    await asyncio.sleep(0.05)
    assert not first.done()
    assert h.probe.calls == []

    rest = [h.infer({"x": [[float(i)]]}) for i in range(2, 5)]
    outputs = await asyncio.wait_for(asyncio.gather(first, *rest), 5)  # far below 10 s

    assert [float(o["total"][0]) for o in outputs] == [1.0, 2.0, 3.0, 4.0]
    assert h.probe.batch_sizes == [4]


async def test_fill_runs_a_partial_batch_after_the_max_latency(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", wait="fill", max_batch_size=64, max_batch_latency_ms=100)
    began = time.monotonic()
    got = await asyncio.wait_for(h.infer({"x": [[2.0, 3.0]]}), 5)
    elapsed = time.monotonic() - began
    np.testing.assert_array_equal(got["total"], [5.0])
    assert 0.09 <= elapsed < 2.0, elapsed
    assert h.probe.batch_sizes == [1]


async def test_fill_deadline_counts_from_the_first_arrival(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("slow", wait="fill", max_batch_size=8, max_batch_latency_ms=200,
                           max_concurrency=1)
    a = asyncio.create_task(h.infer({"x": [[1.0]], "delay_ms": [400.0]}))
    await started(h)  # a holds the only slot for 400 ms
    b = asyncio.create_task(h.infer({"x": [[2.0]], "delay_ms": [0.0]}))
    await asyncio.wait_for(asyncio.gather(a, b), 5)

    (_, a_end), (b_start, _) = h.probe.spans
    # b arrived ~400 ms before the slot freed, so its 200 ms fill deadline had already passed.
    assert b_start - a_end < 0.1, f"b waited {b_start - a_end:.3f}s after the slot freed"


# --- drain ------------------------------------------------------------------------------------


async def test_drain_finishes_running_and_queued_batches(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", max_batch_size=1)
    h.probe.gate.clear()
    tasks = [asyncio.create_task(h.infer({"x": [[float(i)]]})) for i in range(3)]
    await h.wait_delivered(3)
    await started(h)
    assert h.subscription is not None
    await h.subscription.cancel()

    drain = asyncio.create_task(h.batcher.drain(timeout=5))
    done, _ = await asyncio.wait({drain}, timeout=0.05)
    assert not done, "drain returned while a batch was still running"
    h.probe.gate.set()
    await asyncio.wait_for(drain, 5)

    assert all(task.done() for task in tasks), "drain returned before every reply was sent"
    assert [float(t.result()["total"][0]) for t in tasks] == [0.0, 1.0, 2.0]
    assert h.probe.batch_sizes == [1, 1, 1]


async def test_drain_timeout_fails_the_running_batch_and_requeues_the_rest(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum", max_batch_size=1)
    h.probe.gate.clear()
    running = asyncio.create_task(h.request({"x": [[1.0]]}))
    waiting = asyncio.create_task(h.request({"x": [[2.0]]}))
    await h.wait_delivered(2)
    await started(h)
    assert h.subscription is not None
    await h.subscription.cancel()

    await asyncio.wait_for(h.batcher.drain(timeout=0.05), 5)

    reply = await asyncio.wait_for(running, 5)
    assert isinstance(reply.error, WorkerFailed)
    name, version = h.config.name, h.config.version
    assert await h.broker.queue_depth(name, version) == 1
    # The requeued request goes to the next consumer: the one the batcher was handed second.
    handed: asyncio.Queue[Any] = asyncio.Queue()
    await h.broker.consume(h.config, handed.put_nowait, 1)
    delivery = await asyncio.wait_for(handed.get(), 5)
    assert len(h.request_ids) == 2
    assert delivery.request.request_id == h.request_ids[1]
    np.testing.assert_array_equal(delivery.request.inputs["x"], [[2.0]])
    # Replied but not acked here: acking a redelivery is covered by the broker contract tests
    # in tests/contract/test_broker_contract.py, not the batcher's business.
    await delivery.reply(PredictReply({"total": np.array([2.0], np.float32)}))
    assert (await asyncio.wait_for(waiting, 5)).result()["total"].tolist() == [2.0]


class HeldReply(Delivery):
    """A delivery whose reply waits for ``released``: a broker slow to take the reply."""

    def __init__(self, delivery: Delivery, holding: asyncio.Event,
                 released: asyncio.Event) -> None:
        self.request = delivery.request
        self._delivery = delivery
        self._holding = holding
        self._released = released

    async def reply(self, reply: PredictReply) -> None:
        self._holding.set()
        await self._released.wait()
        await self._delivery.reply(reply)

    async def ack(self) -> None:
        await self._delivery.ack()

    async def reject(self, requeue: bool) -> None:
        await self._delivery.reject(requeue)


async def test_wait_idle_returns_once_every_reply_is_sent_and_batching_goes_on(
    make_batcher: MakeBatcher,
) -> None:
    h = await make_batcher("sum")
    holding, released = asyncio.Event(), asyncio.Event()
    await h.subscription.cancel()  # consumed again through the held replies
    h.subscription = await h.broker.consume(
        h.config, lambda d: h.handle(HeldReply(d, holding, released)), 16)
    task = asyncio.create_task(h.infer({"x": [[1.0, 2.0]]}))
    await asyncio.wait_for(holding.wait(), 5)  # the batch ran; its reply is on its way

    idle = asyncio.create_task(h.batcher.wait_idle())
    try:
        done, _ = await asyncio.wait({idle}, timeout=0.05)
        assert not done, "wait_idle returned while a reply was still being sent"
    finally:
        released.set()  # else the harness's drain would wait for the reply forever
    await asyncio.wait_for(idle, 5)

    assert h.subscription.unacked == 0, "wait_idle returned before the ack"  # in-memory
    assert task.done() and task.result()["total"].tolist() == [3.0]
    assert (await h.infer({"x": [[5.0]]}))["total"].tolist() == [5.0]  # not stopped


async def test_an_isolated_delivery_runs_in_a_batch_of_its_own(make_batcher: MakeBatcher) -> None:
    h = await make_batcher("sum", max_batch_size=16)
    submit = h.batcher.submit

    def isolate_suspects(delivery: Delivery) -> None:
        # Rows from 1000 up play the redelivered requests (the AMQP retry queue's deliveries).
        delivery.isolated = bool(delivery.request.inputs["x"][0, 0] >= 1000)
        submit(delivery)

    h.batcher.submit = isolate_suspects  # type: ignore[method-assign]
    h.probe.gate.clear()
    holder = asyncio.create_task(h.infer({"x": rows(1, 3, 0)}))
    await started(h)  # it holds the only runner slot: the rest pile up behind it
    bases = [10, 1000, 20, 30, 2000, 40, 3000, 50]
    tasks = [asyncio.create_task(h.infer({"x": rows(1, 3, b)})) for b in bases]
    await h.wait_delivered(1 + len(bases))
    h.probe.gate.set()

    outputs = await asyncio.wait_for(asyncio.gather(holder, *tasks), 10)
    for base, got in zip([0, *bases], outputs, strict=True):
        np.testing.assert_array_equal(got["total"], rows(1, 3, base).sum(axis=1))
    # The holder alone, the five others together, each suspect alone.
    assert h.probe.batch_sizes == [1, 5, 1, 1, 1]
    assert all(call["x"].shape[0] == 1 for call in h.probe.calls if call["x"][0, 0] >= 1000)
