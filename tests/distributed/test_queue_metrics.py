"""The facade's queue gauges (facade/queue_stats.py) against the real broker: what producers
queued while no worker ran, then a worker draining it, then the version unloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.state.redis_store import RedisStateStore
from common.transport.amqp.broker import AmqpBroker
from common.transport.broker import QueueStats
from common.wire import JSON_CONTENT_TYPE
from tests.distributed.conftest import Cluster, queue_requests, replies_in

pytestmark = pytest.mark.asyncio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    text = (await client.get("/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def queue(samples: Samples, name: str, model: str, version: int) -> float | None:
    return samples.get((name, (("model", model), ("version", str(version)))))


async def until_scraped(client: httpx.AsyncClient, check: Callable[[Samples], bool],
                        timeout: float = 30) -> Samples:
    """The facade's metrics once ``check`` holds (the watch reads every 0.1 s: poll, bounded)."""
    samples: Samples = {}
    try:
        async with asyncio.timeout(timeout):
            while not check(samples := await scrape(client)):  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"metrics never matched: {samples}") from None
    return samples


async def test_queue_gauges_follow_the_broker(running: Cluster) -> None:
    facade, client = await running.facade(queue_stats_interval_s=0.1)
    store = RedisStateStore(running.redis.url, running.redis.prefix)
    await store.start()
    running.closers.append(store.aclose)
    producer_side = AmqpBroker(running.broker_url)
    await producer_side.start()
    running.closers.append(producer_side.aclose)

    # Producers queue five requests for sum v1 while no worker runs.
    await store.init_model("sum", 1)
    config = facade.view.repository.get("sum", 1).config  # declared as its worker will
    await producer_side.declare_queue("sum", 1, max_length=config.queue.max_length)
    body = orjson.dumps({"inputs": {"x": {"data": [[1, 2]]}}})
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        replies = await queue_requests(connection, "sum.v1", [(body, JSON_CONTENT_TYPE)] * 5)

        samples = await until_scraped(client, lambda s: (
            queue(s, "inferno_queue_messages", "sum", 1) == 5
            and queue(s, "inferno_queue_consumers", "sum", 1) == 0))
        assert samples.get(("inferno_dead_letter_messages", ())) is not None
        assert facade.queues.snapshot() == {("sum", 1): QueueStats(messages=5, consumers=0)}
        assert facade.queues.dead_letters is not None

        # A worker drains the queue: nothing waits, one consumer.
        await running.worker(preload=["sum"])
        await until_scraped(client, lambda s: (
            queue(s, "inferno_queue_messages", "sum", 1) == 0
            and queue(s, "inferno_queue_consumers", "sum", 1) == 1))
        async with asyncio.timeout(30):
            answered: list[aio_pika.abc.AbstractIncomingMessage] = []
            while len(answered) < 5:  # another connection's queue: poll it, bounded
                answered += await replies_in(replies)
                await asyncio.sleep(0.05)
        assert sorted(int(m.correlation_id or -1) for m in answered) == [0, 1, 2, 3, 4]

    # Unloaded: the version leaves the view, and its label sets leave /metrics.
    await store.set_desired("sum", 1, loaded=False)
    samples = await until_scraped(client, lambda s: (
        queue(s, "inferno_queue_messages", "sum", 1) is None
        and queue(s, "inferno_queue_consumers", "sum", 1) is None))
    assert ("sum", 1) not in facade.queues.snapshot()
