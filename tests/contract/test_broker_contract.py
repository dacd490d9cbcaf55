"""The ``Broker`` contract (common/transport/broker.py), run against every implementation
(conftest.py).

Where a test checks that something does NOT happen (no delivery), it waits a short quiet period
(``quiet()``): there is no event for "nothing arrived", and a real broker delivers asynchronously.
Queue depth has no event either, so ``eventually()`` polls it, bounded: RabbitMQ counts only
ready messages, and its count lags a delivery or an expiry by a moment.

Over AMQP a delivery's ``request`` is a copy decoded against the consumer's signature (numpy views
on the message body), not the caller's object: tests compare values, never identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from common.errors import DeadlineExceeded, InvalidInput, ModelFailed, ModelNotLoaded, Overloaded
from common.model.dtypes import DType, float_to_bf16_bits
from common.model.signature import Signature
from common.transport.broker import Broker, Delivery, Subscription
from common.wire.messages import PredictReply, PredictRequest
from tests.contract.configs import checked, config_for

# What the test requests carry, for brokers that decode wire bodies against a signature.
SIGNATURE = Signature.model_validate({
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 2]},
               {"name": "mask", "dtype": "bool", "shape": ["batch", 2], "optional": True}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 2]}],
})


def make_request(model: str, i: int = 0, *, timeout: float = 5.0, version: int = 1,
                 outputs: list[str] | None = None) -> PredictRequest:
    inputs = {"x": np.array([[float(i), 0.5]], np.float32)}
    return PredictRequest(model=model, version=version, inputs=inputs,
                          checked=checked(model, SIGNATURE, inputs, outputs),
                          deadline=time.time() + timeout,
                          request_id=f"req-{i}", published=time.time())


class Inbox:
    """A consumer callback that never blocks: deliveries wait in a queue for the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def __call__(self, delivery: Delivery) -> None:
        self.queue.put_nowait(delivery)

    async def next(self, timeout: float = 2.0) -> Delivery:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def empty(self) -> bool:
        return self.queue.empty()


def doubled(delivery: Delivery) -> PredictReply:
    return PredictReply({"y": delivery.request.inputs["x"] * 2})


async def answer(delivery: Delivery) -> None:
    await delivery.reply(doubled(delivery))
    await delivery.ack()


async def quiet() -> None:
    await asyncio.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def broker_expiry(timeout: float) -> None:
    """Wait until the broker has surely expired a request of ``timeout`` its caller gave up on.

    The caller's clock starts when it calls ``request()``; RabbitMQ's per-message expiration
    starts when it queues the message, a moment later (more under load), so right after the
    caller's ``DeadlineExceeded`` the message may still be live for that moment: a worker then
    drops it by its ``inferno-deadline`` header, the third place the deadline is enforced. The
    message was queued before the caller gave up (the publish is confirmed first) and expires at
    most ``timeout`` after that: expiry is purely time-based, so this sleep is the wait.
    """
    await asyncio.sleep(timeout)


async def depth_is(broker: Broker, model: str, expected: int, timeout: float = 2.0) -> bool:
    async def check() -> bool:
        return await broker.queue_depth(model, 1) == expected
    return await eventually(check, timeout)


async def consume(broker: Broker, model: str, inbox: Inbox, prefetch: int,
                  signature: Signature = SIGNATURE) -> Subscription:
    """Consume version 1 of ``model``."""
    return await broker.consume(config_for(model, signature), inbox, prefetch)


def start(broker: Broker, request: PredictRequest) -> asyncio.Task[PredictReply]:
    return asyncio.create_task(broker.request(request))


# --- request / reply ---------------------------------------------------------------------------


async def test_request_reply_round_trip(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=100)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    tasks = [start(broker, make_request(model, i, outputs=["y"])) for i in range(5)]

    delivered = []
    for _ in range(5):
        delivery = await inbox.next()
        assert delivery.request.model == model and delivery.request.version == 1
        assert delivery.request.checked.outputs == ["y"]
        delivered.append(delivery.request.request_id)
        await answer(delivery)
    replies = await asyncio.wait_for(asyncio.gather(*tasks), 5)

    for i, reply in enumerate(replies):
        np.testing.assert_array_equal(reply.result()["y"], [[2.0 * i, 1.0]])
    # Each request was delivered once: none twice, and none again once acknowledged.
    assert sorted(delivered) == [f"req-{i}" for i in range(5)]
    await quiet()
    assert inbox.empty(), "an acknowledged request was delivered again"


async def test_the_request_arrives_intact(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    sent = make_request(model, 7, outputs=["y"])
    sent.inputs["mask"] = np.array([[True, False]])
    task = start(broker, sent)

    delivery = await inbox.next()
    got = delivery.request
    assert got.request_id == "req-7"
    assert got.deadline == pytest.approx(sent.deadline, abs=0.002)
    assert sorted(got.inputs) == ["mask", "x"]
    for name, array in sent.inputs.items():
        assert got.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(got.inputs[name], array)
    await answer(delivery)
    assert (await asyncio.wait_for(task, 2)).error is None


@pytest.mark.parametrize("error", [InvalidInput("Input 'x': bad"), ModelFailed("boom")],
                         ids=lambda e: e.code)
async def test_errors_come_back_typed(broker: Broker, model: str, error: Exception) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model))
    delivery = await inbox.next()
    await delivery.reply(PredictReply(error=error))  # type: ignore[arg-type]
    await delivery.ack()

    reply = await asyncio.wait_for(task, 2)
    with pytest.raises(type(error)) as info:
        reply.result()
    assert info.value.message == error.message  # type: ignore[attr-defined]


async def test_no_queue_is_model_not_loaded(broker: Broker, model: str) -> None:
    with pytest.raises(ModelNotLoaded):
        await asyncio.wait_for(broker.request(make_request(model)), 2)


async def test_queues_are_per_version(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    with pytest.raises(ModelNotLoaded):
        await asyncio.wait_for(broker.request(make_request(model, version=2)), 2)
    await broker.declare_queue(model, 2, max_length=10)
    task = start(broker, make_request(model, version=2, timeout=0.3))
    await quiet()
    assert inbox.empty(), "a request for version 2 reached version 1's consumer"
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(task, 2)


async def test_declare_queue_is_idempotent(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    task = start(broker, make_request(model))
    assert await depth_is(broker, model, 1)
    await broker.declare_queue(model, 1, max_length=10)
    assert await broker.queue_depth(model, 1) == 1  # redeclaring kept the waiting request
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    await answer(await inbox.next())
    assert (await asyncio.wait_for(task, 2)).error is None


async def test_a_worker_in_another_process_answers(broker: Broker, peer: Broker,
                                                  model: str) -> None:
    # The facade requests through its broker; the worker declares, consumes and replies
    # through its own (the same object in memory, another connection over AMQP).
    await peer.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(peer, model, inbox, prefetch=10)
    ok, failing = start(broker, make_request(model, 4)), start(broker, make_request(model, 5))
    for _ in range(2):
        delivery = await inbox.next()
        if delivery.request.request_id == "req-4":
            await answer(delivery)
        else:
            await delivery.reply(PredictReply(error=ModelFailed("no")))
            await delivery.ack()
    np.testing.assert_array_equal((await asyncio.wait_for(ok, 2)).result()["y"], [[8.0, 1.0]])
    with pytest.raises(ModelFailed):
        (await asyncio.wait_for(failing, 2)).result()


async def test_concurrent_requests_get_their_own_replies(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=100)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=50)
    tasks = [start(broker, make_request(model, i)) for i in range(40)]
    deliveries = [await inbox.next() for _ in range(40)]
    for delivery in reversed(deliveries):  # answered in another order than asked
        await answer(delivery)
    replies = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    for i, reply in enumerate(replies):
        np.testing.assert_array_equal(reply.result()["y"], [[2.0 * i, 1.0]])


ALL_DTYPES = Signature.model_validate({
    "inputs": [{"name": d.value, "dtype": d.value, "shape": ["batch", 2]} for d in DType],
    "outputs": [{"name": f"out_{d.value}", "dtype": d.value, "shape": ["batch", 2]}
                for d in DType],
})


def sample(dtype: DType) -> np.ndarray:
    """Two values of ``dtype`` at the edges of its range (bfloat16: bit patterns of 1.5, -inf;
    string: empty and multi-byte text)."""
    if dtype is DType.STRING:
        return np.array([["", "naïve 日本 😀"]], dtype=object)
    if dtype is DType.BOOL:
        return np.array([[True, False]])
    if dtype is DType.BFLOAT16:
        return float_to_bf16_bits(np.array([[1.5, -np.inf]], np.float32))
    numpy = dtype.numpy
    if numpy.kind in "iu":
        info = np.iinfo(numpy)  # type: ignore[type-var]
        return np.array([[info.min, info.max]], numpy)
    info_f = np.finfo(numpy)  # type: ignore[type-var]
    return np.array([[float(info_f.tiny), -float(info_f.max)]], numpy)


async def test_every_dtype_arrives_intact_both_ways(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1, signature=ALL_DTYPES)
    inputs = {d.value: sample(d) for d in DType}
    inputs["float64"] = np.asfortranarray(np.repeat(inputs["float64"], 2, axis=0))[:1]
    sent = PredictRequest(model=model, version=1, inputs=inputs,
                          checked=checked(model, ALL_DTYPES, inputs), deadline=time.time() + 5,
                          request_id="req-dtypes", dtypes=ALL_DTYPES.input_dtypes)
    task = start(broker, sent)

    delivery = await inbox.next()
    for dtype in DType:
        got = delivery.request.inputs[dtype.value]
        assert got.dtype == dtype.numpy, dtype  # bfloat16: its bit patterns, as uint16
        np.testing.assert_array_equal(got, sample(dtype), err_msg=dtype.value)
    await delivery.reply(PredictReply({f"out_{d.value}": sample(d) for d in DType}))
    await delivery.ack()

    outputs = (await asyncio.wait_for(task, 2)).result()
    for dtype in DType:
        got = outputs[f"out_{dtype.value}"]
        assert got.dtype == dtype.numpy, dtype
        np.testing.assert_array_equal(got, sample(dtype), err_msg=dtype.value)


# --- bounded queues and deadlines ------------------------------------------------------------


async def test_a_full_queue_refuses_at_once(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=2)
    queued = [start(broker, make_request(model, i)) for i in range(2)]
    assert await depth_is(broker, model, 2)

    began = time.monotonic()
    with pytest.raises(Overloaded):
        await asyncio.wait_for(broker.request(make_request(model, 9)), 2)
    assert time.monotonic() - began < 1.0

    # The two that fitted are still served.
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    for _ in range(2):
        await answer(await inbox.next())
    for reply in await asyncio.wait_for(asyncio.gather(*queued), 2):
        assert reply.error is None


async def test_the_deadline_ends_the_wait(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, timeout=0.1)), 2)
    assert 0.05 <= time.monotonic() - began < 1.0


async def test_an_expired_request_is_never_delivered(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, 1, timeout=0.05)), 2)
    await broker_expiry(0.05)

    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    await quiet()
    assert inbox.empty(), "a request nobody waits for was delivered"
    # The consumer works: a live request still gets through.
    task = start(broker, make_request(model, 2))
    delivery = await inbox.next()
    assert delivery.request.request_id == "req-2"
    await answer(delivery)
    assert (await asyncio.wait_for(task, 2)).error is None


async def test_an_expired_request_leaves_the_queue(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=1)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, 1, timeout=0.05)), 2)
    emptied = await depth_is(broker, model, 0, timeout=0.5)
    # No consumer: the next request must be queued (and expire in turn), not refused.
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, 2, timeout=0.1)), 2)
    assert emptied


async def test_a_late_reply_is_dropped_quietly(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, timeout=0.2))
    delivery = await inbox.next()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(task, 2)
    await answer(delivery)  # nobody waits: no error
    # Settled: the consumer's prefetch slot is free again.
    next_task = start(broker, make_request(model, 1))
    await answer(await inbox.next())
    assert (await asyncio.wait_for(next_task, 2)).error is None


async def test_a_request_already_past_its_deadline_is_never_delivered(broker: Broker,
                                                                     model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, 1, timeout=-0.5)), 2)
    assert time.monotonic() - began < 0.5  # at once, not after some wait
    # Had it been queued, it would be delivered before this one.
    task = start(broker, make_request(model, 2))
    delivery = await inbox.next()
    assert delivery.request.request_id == "req-2"
    await answer(delivery)
    assert (await asyncio.wait_for(task, 2)).error is None


async def test_an_expired_request_behind_a_live_one_is_never_delivered(broker: Broker,
                                                                      model: str) -> None:
    # RabbitMQ drops an expired message only once it reaches the head of the queue: here it
    # waits behind a live one, and must still be dropped rather than delivered.
    await broker.declare_queue(model, 1, max_length=10)
    live = start(broker, make_request(model, 1))
    assert await depth_is(broker, model, 1)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(broker.request(make_request(model, 2, timeout=0.1)), 2)
    await broker_expiry(0.1)

    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    first = await inbox.next()
    assert first.request.request_id == "req-1"
    later = start(broker, make_request(model, 3))
    second = await inbox.next()  # req-2, were it delivered, would come before req-3
    assert second.request.request_id == "req-3"
    await answer(first)
    await answer(second)
    for reply in await asyncio.wait_for(asyncio.gather(live, later), 2):
        assert reply.error is None
    assert await depth_is(broker, model, 0)


async def test_a_full_queue_takes_requests_again_once_one_is_handed_out(broker: Broker,
                                                                       model: str) -> None:
    await broker.declare_queue(model, 1, max_length=1)
    first = start(broker, make_request(model, 1))
    assert await depth_is(broker, model, 1)
    with pytest.raises(Overloaded):
        await asyncio.wait_for(broker.request(make_request(model, 2)), 2)

    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    held = await inbox.next()  # handed out, not yet acked: no longer counts against the bound
    second = start(broker, make_request(model, 3))
    await answer(await inbox.next())
    await answer(held)
    for reply in await asyncio.wait_for(asyncio.gather(first, second), 2):
        assert reply.error is None


async def test_a_duplicate_reply_is_dropped_quietly(broker: Broker, model: str) -> None:
    # At-least-once: a redelivered request may be answered twice. The caller keeps the first.
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, 3))
    delivery = await inbox.next()
    await delivery.reply(doubled(delivery))
    await delivery.reply(PredictReply(error=ModelFailed("second answer")))
    await delivery.ack()
    np.testing.assert_array_equal((await asyncio.wait_for(task, 2)).result()["y"], [[6.0, 1.0]])
    # The caller's side still works.
    following = start(broker, make_request(model, 4))
    await answer(await inbox.next())
    assert (await asyncio.wait_for(following, 2)).error is None


# --- settling and prefetch ---------------------------------------------------------------------


async def test_reject_with_requeue_redelivers(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, 3))

    first = await inbox.next()
    assert first.request.request_id == "req-3"
    await first.reject(requeue=True)
    again = await inbox.next()  # the only request published: this is its second delivery
    assert again.request.request_id == "req-3"
    await again.reply(doubled(again))
    np.testing.assert_array_equal((await asyncio.wait_for(task, 2)).result()["y"], [[6.0, 1.0]])


async def test_a_redelivery_can_be_acked_and_frees_its_prefetch(broker: Broker,
                                                                model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, 3))
    await (await inbox.next()).reject(requeue=True)
    again = await inbox.next()
    await again.reply(doubled(again))
    await again.ack()
    assert (await asyncio.wait_for(task, 2)).error is None
    following = start(broker, make_request(model, 4))
    await answer(await inbox.next())
    assert (await asyncio.wait_for(following, 2)).error is None


async def test_reject_without_requeue_drops(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, timeout=0.3))
    await (await inbox.next()).reject(requeue=False)
    await quiet()
    assert inbox.empty(), "a dropped request was delivered again"
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(task, 2)
    assert await broker.queue_depth(model, 1) == 0


async def test_prefetch_limits_unacked_deliveries(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=100)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=2)
    # req-1 will be rejected (dropped): its caller gives up after a short deadline.
    tasks = [start(broker, make_request(model, i, timeout=0.5 if i == 1 else 5))
             for i in range(5)]

    held = [await inbox.next(), await inbox.next()]
    await quiet()
    assert inbox.empty(), "more deliveries than prefetch are unacked"
    assert await depth_is(broker, model, 3)

    await answer(held[0])  # one slot frees: exactly one more arrives, in publish order
    third = await inbox.next()
    assert third.request.request_id == "req-2"
    await quiet()
    assert inbox.empty()

    await held[1].reject(requeue=False)  # rejecting frees a slot too
    fourth = await inbox.next()
    await answer(third)
    await answer(fourth)
    await answer(await inbox.next())
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3)
    assert isinstance(results[1], DeadlineExceeded)
    assert all(isinstance(r, PredictReply) and r.error is None
               for i, r in enumerate(results) if i != 1)


async def test_an_ack_frees_its_slot_while_an_older_delivery_is_in_flight(
        broker: Broker, model: str) -> None:
    # Batches finish out of order (max_concurrency > 1): a newer one's acks must not wait for
    # an older, slower one, or the slow batch would hold the whole prefetch window.
    await broker.declare_queue(model, 1, max_length=100)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=2)
    tasks = [start(broker, make_request(model, i)) for i in range(3)]
    slow, fast = await inbox.next(), await inbox.next()

    await answer(fast)
    third = await inbox.next()  # delivered while `slow` is still unsettled

    assert third.request.request_id == "req-2"
    await answer(slow)
    await answer(third)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 3)
    assert all(r.error is None for r in results)


async def test_competing_consumers_share_the_queue(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    first, second = Inbox(), Inbox()
    await consume(broker, model, first, prefetch=1)
    await consume(broker, model, second, prefetch=1)
    tasks = [start(broker, make_request(model, i)) for i in range(2)]
    a, b = await first.next(), await second.next()
    assert {a.request.request_id, b.request.request_id} == {"req-0", "req-1"}
    await answer(a)
    await answer(b)
    for reply in await asyncio.wait_for(asyncio.gather(*tasks), 2):
        assert reply.error is None


async def test_cancel_stops_deliveries_but_handed_out_ones_stay_valid(broker: Broker,
                                                                      model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    subscription = await consume(broker, model, inbox, prefetch=10)
    handed = start(broker, make_request(model, 1))
    delivery = await inbox.next()

    await subscription.cancel()
    waiting = start(broker, make_request(model, 2))
    await quiet()
    assert inbox.empty(), "a cancelled consumer still got a delivery"
    assert await depth_is(broker, model, 1)

    await answer(delivery)  # still valid after the cancel
    assert (await asyncio.wait_for(handed, 2)).error is None

    later = Inbox()
    await consume(broker, model, later, prefetch=1)
    await answer(await later.next())
    assert (await asyncio.wait_for(waiting, 2)).error is None


# --- queue management --------------------------------------------------------------------------


async def test_queue_depth_counts_requests_not_yet_handed_out(broker: Broker,
                                                              model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    assert await broker.queue_depth(model, 1) == 0
    tasks = [start(broker, make_request(model, i)) for i in range(3)]
    assert await depth_is(broker, model, 3)

    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    delivery = await inbox.next()
    assert await depth_is(broker, model, 2)
    await answer(delivery)
    for _ in range(2):
        await answer(await inbox.next())
    assert await depth_is(broker, model, 0)
    await asyncio.wait_for(asyncio.gather(*tasks), 2)


async def test_delete_queue(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    dropped = start(broker, make_request(model, timeout=0.3))
    assert await depth_is(broker, model, 1)

    await broker.delete_queue(model, 1)

    with pytest.raises(ModelNotLoaded):
        await asyncio.wait_for(broker.request(make_request(model)), 2)
    # The request in it was dropped, unanswered: its caller learns at once (ModelNotLoaded) or,
    # at the latest, at its deadline.
    with pytest.raises((ModelNotLoaded, DeadlineExceeded)):
        await asyncio.wait_for(dropped, 2)
    # A new queue of the same name starts empty.
    await broker.declare_queue(model, 1, max_length=10)
    assert await broker.queue_depth(model, 1) == 0


async def test_delete_queue_ends_its_consumers(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    subscription = await consume(broker, model, inbox, prefetch=10)
    await broker.delete_queue(model, 1)
    await broker.declare_queue(model, 1, max_length=10)  # a new queue of the same name
    task = start(broker, make_request(model, 1, timeout=5))
    assert await depth_is(broker, model, 1)  # queued, not handed to the old consumer
    assert inbox.empty()
    await subscription.cancel()  # cancelling an ended subscription is harmless

    later = Inbox()
    await consume(broker, model, later, prefetch=1)
    await answer(await later.next())
    assert (await asyncio.wait_for(task, 2)).error is None


async def test_deleting_a_missing_queue_is_harmless(broker: Broker, model: str) -> None:
    await broker.delete_queue(model, 1)
    await broker.declare_queue(model, 1, max_length=10)
    await broker.delete_queue(model, 1)
    await broker.delete_queue(model, 1)
    with pytest.raises(ModelNotLoaded):
        await asyncio.wait_for(broker.request(make_request(model)), 2)


async def test_queue_depth_of_a_missing_queue_is_zero(broker: Broker, model: str) -> None:
    assert await broker.queue_depth(model, 1) == 0
    # And asking did not break the broker.
    await broker.declare_queue(model, 1, max_length=10)
    task = start(broker, make_request(model))
    assert await depth_is(broker, model, 1)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    await answer(await inbox.next())
    assert (await asyncio.wait_for(task, 2)).error is None


async def test_consuming_a_missing_queue_is_model_not_loaded(broker: Broker, model: str) -> None:
    # "No queue for a version: ModelNotLoaded" (common/transport/broker.py), for workers as for
    # callers.
    with pytest.raises(ModelNotLoaded):
        await consume(broker, model, Inbox(), prefetch=1)


async def test_alias_binding_is_idempotent_and_leaves_pinned_routing_alone(
        broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    await broker.declare_queue(model, 2, max_length=10)
    await broker.unbind_alias(model, 1)  # never bound: harmless
    await broker.bind_alias(model, 1)
    await broker.bind_alias(model, 1)
    await broker.bind_alias(model, 2)  # activation: the new version first, then the old goes
    await broker.unbind_alias(model, 1)
    await broker.unbind_alias(model, 1)
    # Pinned requests (all the facade sends) still reach exactly their version.
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=10)
    task = start(broker, make_request(model, 1, version=1))
    delivery = await inbox.next()
    assert delivery.request.version == 1
    await answer(delivery)
    assert (await asyncio.wait_for(task, 2)).error is None
    assert await broker.queue_depth(model, 2) == 0


async def test_an_alias_to_a_missing_queue_leaves_the_broker_working(broker: Broker,
                                                                    model: str) -> None:
    # A worker may point the alias at a version another worker has just unloaded. Refusing is
    # fine (ModelNotLoaded: "no queue for a version"), "the broker is down" is not; and the
    # broker must go on working at once.
    with contextlib.suppress(ModelNotLoaded):
        await broker.bind_alias(model, 1)
    await broker.declare_queue(model, 1, max_length=10)
    await broker.bind_alias(model, 1)
    # It does: a request reaches the version's consumer and its answer comes back.
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, 3))
    delivery = await inbox.next()
    assert delivery.request.request_id == "req-3"
    await answer(delivery)
    np.testing.assert_array_equal((await asyncio.wait_for(task, 2)).result()["y"], [[6.0, 1.0]])
