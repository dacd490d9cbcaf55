"""What only the Redis state store can break: its event subscription lives on a connection,
and its workers are listed from an index rather than a scan of a Redis shared with others.

The ``StateStore`` contract (common/state/store.py) says a store that subscribes asynchronously
sends ``RESYNC`` after every re-subscription, so a listener that lost events re-reads the whole
state.
Here the subscription's own connection is killed (found by a client name of this test's own, so
no other client of the shared Redis is touched).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as redis

from common.state.redis_store import RedisStateStore
from common.state.store import RESYNC, EventKind, StateEvent, WorkerInfo
from tests.services import RedisSpace


async def started(url: str, prefix: str) -> RedisStateStore:
    store = RedisStateStore(url, prefix)
    await store.start()
    return store


async def test_a_lost_subscription_comes_back_with_resync(redis_space: RedisSpace) -> None:
    client_name = f"inferno-contract-{uuid.uuid4().hex[:10]}"
    store = await started(f"{redis_space.url}?client_name={client_name}", redis_space.prefix)
    writer = await started(redis_space.url, redis_space.prefix)
    admin = redis.Redis.from_url(redis_space.url)
    events: AsyncIterator[StateEvent] = store.events()
    try:
        assert await asyncio.wait_for(anext(events), 2) == RESYNC  # subscribed
        subscriptions = [c for c in await admin.client_list()
                         if c.get("name") == client_name and "P" in c["flags"]]
        assert len(subscriptions) == 1, subscriptions
        await admin.client_kill_filter(_id=subscriptions[0]["id"])

        # Whatever changed while it was gone, the listener is told to re-read everything...
        assert await asyncio.wait_for(anext(events), 5) == RESYNC
        # ...and follows changes again.
        await writer.set_active("contract-model", 1)
        # (a re-subscription may be confirmed more than once: RESYNC is idempotent)
        event = await asyncio.wait_for(anext(events), 2)
        while event == RESYNC:
            event = await asyncio.wait_for(anext(events), 2)
        assert event == StateEvent(EventKind.MODEL, "contract-model")
    finally:
        await store.aclose()
        await writer.aclose()
        await admin.aclose()


async def test_workers_that_came_and_went_leave_the_index(redis_space: RedisSpace) -> None:
    store = await started(redis_space.url, redis_space.prefix)
    admin = redis.Redis.from_url(redis_space.url)
    try:
        for index in range(20):  # workers that beat once and died (SIGKILL: no goodbye)
            await store.put_worker(WorkerInfo(f"gone-{index}", "host", "cpu"), ttl_s=0.001)
        await asyncio.sleep(0.01)  # their heartbeats expire (server-side, by time)
        await store.put_worker(WorkerInfo("live", "host", "cpu"), ttl_s=10)

        assert [w.worker_id for w in await store.workers()] == ["live"]
        # The next heartbeat pruned the dead ones: the index does not grow with churn.
        assert await admin.zrange(store.keys.workers, 0, -1) == [b"live"]
        await store.remove_worker("live")
        assert await store.workers() == []
        assert await admin.zcard(store.keys.workers) == 0
    finally:
        await store.aclose()
        await admin.aclose()
