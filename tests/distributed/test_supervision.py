"""Background loops on real Redis and RabbitMQ: an event nobody knows does not stop a watcher,
and a worker that cannot finish an unload keeps reporting the runner that still consumes.

The broker outage is a cut of a ``CuttableProxy`` (harness/proxy.py) between one worker and the
broker: no other client of the shared broker is touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from common.errors import BrokerUnavailable
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.state.redis_store import RedisStateStore
from common.state.store import RESYNC, EventKind, StateEvent
from facade.cluster_view import ClusterView
from tests.distributed.conftest import Cluster
from tests.services import RedisSpace

pytestmark = pytest.mark.asyncio

BOGUS = [b'{"kind": "tensor", "name": "x"}', b'{"name": "no kind"}', b"not json", b"[1, 2]"]


async def publish_bogus(space: RedisSpace, store: RedisStateStore) -> None:
    """What a newer process (a new event kind) or a stranger might publish on the channel."""
    admin = redis.Redis.from_url(space.url)
    try:
        for data in BOGUS:
            await admin.publish(store.keys.events, data)
    finally:
        await admin.aclose()


async def test_redis_events_go_on_past_an_unknown_event(redis_space: RedisSpace) -> None:
    store = RedisStateStore(redis_space.url, redis_space.prefix)
    await store.start()
    events: AsyncIterator[StateEvent] = store.events()
    try:
        assert await asyncio.wait_for(anext(events), 5) == RESYNC
        await publish_bogus(redis_space, store)
        await store.set_active("after", 1)
        event = await asyncio.wait_for(anext(events), 5)
        assert event == StateEvent(EventKind.MODEL, "after")
    finally:
        await store.aclose()


async def test_the_view_follows_events_past_an_unknown_one(redis_space: RedisSpace,
                                                           cluster: Cluster) -> None:
    store = RedisStateStore(redis_space.url, redis_space.prefix)
    await store.start()
    repository = ModelRepository(cluster.repo)
    repository.scan()
    # An hour between timed refreshes: what the view learns, it learns from an event.
    view = ClusterView(store, repository, FacadeMetrics(CollectorRegistry()), 3600, 3600)
    await view.start()
    try:
        await publish_bogus(redis_space, store)
        await store.set_active("sum", 1)
        async with asyncio.timeout(10):
            assert await view.wait_for(lambda: view.models.get("sum"), 3600)
        assert view.supervisor.down() == {}
    finally:
        await view.aclose()
        await store.aclose()


async def test_a_worker_follows_events_past_an_unknown_one(running: Cluster) -> None:
    worker, _ = await running.worker(preload=[], state_reconcile_interval_s=3600)
    store = RedisStateStore(running.redis.url, running.redis.prefix)
    await store.start()
    events = store.events()
    try:
        assert await asyncio.wait_for(anext(events), 5) == RESYNC
        await publish_bogus(running.redis, store)
        await store.set_active("sum", 1)
        async with asyncio.timeout(60):  # loaded on the event: no timed pass for an hour
            while worker.loaded != {"sum": (1,)}:
                await anext(events)  # its heartbeat says what changed
        assert worker.supervisor.down() == {}
    finally:
        await store.aclose()


async def test_an_unload_the_broker_interrupts_keeps_the_runner_reported(
        running: Cluster) -> None:
    proxy, proxied = await running.broker_proxy()
    # One reconcile pass at start-up only: the test runs the others.
    worker, _ = await running.worker(broker_url=proxied, preload=["sum"],
                                     state_reconcile_enabled=False)
    await worker.reconcile()
    assert worker.loaded == {"sum": (1,)}
    store = RedisStateStore(running.redis.url, running.redis.prefix)
    await store.start()
    running.closers.append(store.aclose)
    await store.set_desired("sum", 1, loaded=False)
    await proxy.cut()
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(30):
            await worker.reconcile()  # the queue cannot be drained: the unload stops there
    # Still consuming its queue, so still reported: facades keep routing to it.
    assert worker.loaded == {"sum": (1,)}
    heartbeat = {w.worker_id: w for w in await store.workers()}[worker.worker_id]
    assert heartbeat.loaded == {"sum": (1,)}
    await proxy.restore()
    async with asyncio.timeout(60):  # until its connection is back, then the unload ends
        while True:
            try:
                await worker.reconcile()
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.2)  # another process's reconnection: nothing to await
    assert worker.loaded == {}
    assert await _queue_gone(running.broker_url)


async def _queue_gone(url: str) -> bool:
    import aio_pika
    import aiormq

    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue("inferno.sum.v1", passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return True
    return False
