"""``Broker.queue_stats`` and ``dead_letter_depth`` (common/transport/broker.py), on every
implementation: what waits in a version's queue and who consumes it, as the facade's
``/metrics`` exports them. RabbitMQ's counts lag a delivery or a consumer's start by a moment:
``stats_are`` polls them, bounded."""

from __future__ import annotations

import asyncio

from common.transport.amqp.broker import AmqpBroker
from common.transport.broker import NO_QUEUE, Broker, QueueStats
from tests.contract.test_broker_contract import (
    Inbox,
    answer,
    consume,
    eventually,
    make_request,
    start,
)


async def stats_are(broker: Broker, model: str, expected: QueueStats, version: int = 1,
                    timeout: float = 5.0) -> QueueStats:
    """The version's stats once they equal ``expected``, else the last ones read."""
    seen = NO_QUEUE

    async def check() -> bool:
        nonlocal seen
        seen = await broker.queue_stats(model, version)
        return seen == expected
    await eventually(check, timeout)
    return seen


async def test_a_missing_queue_has_no_messages_and_no_consumers(broker: Broker,
                                                                model: str) -> None:
    assert await broker.queue_stats(model, 1) == NO_QUEUE == QueueStats(0, 0)
    await broker.declare_queue(model, 1, max_length=10)  # asking broke nothing
    assert await broker.queue_stats(model, 1) == QueueStats(messages=0, consumers=0)


async def test_messages_and_consumers_follow_the_queue(broker: Broker, peer: Broker,
                                                       model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    await broker.declare_queue(model, 2, max_length=10)
    tasks = [start(broker, make_request(model, i)) for i in range(3)]
    assert await stats_are(broker, model, QueueStats(messages=3, consumers=0)) == QueueStats(3, 0)
    assert await broker.queue_stats(model, 2) == QueueStats(0, 0), "counted per version"

    # A consumer takes one (its prefetch): two wait, one consumer.
    first = Inbox()
    subscription = await consume(peer, model, first, prefetch=1)
    held = await first.next()
    assert await stats_are(broker, model, QueueStats(2, 1)) == QueueStats(2, 1)

    # A second consumer, in another process where the broker is real, takes another.
    second = Inbox()
    other = await consume(peer, model, second, prefetch=1)
    taken = await second.next()
    assert await stats_are(broker, model, QueueStats(1, 2)) == QueueStats(1, 2)

    await other.cancel()
    assert await stats_are(broker, model, QueueStats(1, 1)) == QueueStats(1, 1)
    await answer(taken)
    await answer(held)
    await answer(await first.next())
    assert await stats_are(broker, model, QueueStats(0, 1)) == QueueStats(0, 1)
    assert all(r.error is None for r in await asyncio.wait_for(asyncio.gather(*tasks), 5))

    await subscription.cancel()
    assert await stats_are(broker, model, QueueStats(0, 0)) == QueueStats(0, 0)
    assert await broker.queue_depth(model, 1) == 0  # queue_depth is queue_stats' messages


async def test_a_deleted_queue_reads_as_missing(broker: Broker, model: str) -> None:
    await broker.declare_queue(model, 1, max_length=10)
    task = start(broker, make_request(model, timeout=0.5))
    assert await stats_are(broker, model, QueueStats(1, 0)) == QueueStats(1, 0)
    await broker.delete_queue(model, 1)
    assert await broker.queue_stats(model, 1) == NO_QUEUE
    await asyncio.gather(task, return_exceptions=True)


async def test_the_dead_letter_depth_counts_dropped_requests(broker: Broker,
                                                             model: str) -> None:
    before = await broker.dead_letter_depth()
    if not isinstance(broker, AmqpBroker):
        assert before is None, "in process there is no dead-letter queue"
        return
    assert before is not None and before >= 0
    await broker.declare_queue(model, 1, max_length=10)
    inbox = Inbox()
    await consume(broker, model, inbox, prefetch=1)
    task = start(broker, make_request(model, timeout=0.5))
    await (await inbox.next()).reject(requeue=False)  # dropped: dead-lettered

    async def grew() -> bool:
        now = await broker.dead_letter_depth()
        return now is not None and now > before
    assert await eventually(grew, 5), "the rejected request did not reach inferno.dead-letter"
    await asyncio.gather(task, return_exceptions=True)
