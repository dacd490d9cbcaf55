"""The claim check (common/transport/blobs.py) over a real RabbitMQ and Redis: tensors of the
claim-check size cross the queue by reference both ways, a producer may claim its own blobs, a
bad claim is refused, and no blob outlives its request: after a soak, Redis holds what it held
before.

The model is the test model ``echo16``, which returns its two 16-bit inputs (and their float32
widenings): with ``N`` columns each input is 400 KB, over the 256 KiB default, and so is every
output.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import aio_pika
import numpy as np
import pytest
import redis.asyncio as redis

from common.backends import create_broker
from common.errors import InvalidInput
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.repository import ModelRepository
from common.settings import CommonSettings
from common.transport.blobs import HEADER_CLAIMS
from common.transport.broker import Broker
from common.wire.framing import encode_frame
from common.wire.messages import (
    HEADER_STATUS,
    PredictReply,
    PredictRequest,
    decode_reply,
    request_headers,
)
from tests.distributed.conftest import Cluster, wait_ready
from tests.distributed.polling import scrape, until
from tests.http import free_port
from tests.services import RedisSpace

pytestmark = pytest.mark.asyncio

N = 200_000
BF16 = {"bf16": DType.BFLOAT16, "fp16": DType.FLOAT16}


def inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"bf16": rng.integers(0, 0x7F00, (1, N), dtype=np.uint16),  # finite bfloat16 patterns
            "fp16": rng.standard_normal((1, N)).astype(np.float16)}


@pytest.fixture
async def store(redis_space: RedisSpace) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_space.url)
    yield client
    await client.aclose()


async def blobs(store: redis.Redis, space: RedisSpace) -> list[bytes]:
    return [key async for key in store.scan_iter(f"{space.prefix}:blob:*")]


async def until_true(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Until ``check`` holds: the deletes run in the background, after the ack."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (Redis tells no one of a deletion)
            await asyncio.sleep(0.01)


async def none_left(store: redis.Redis, space: RedisSpace) -> None:
    async def empty() -> bool:
        return not await blobs(store, space)
    await until_true(empty)


async def client(cluster: Cluster, claim_check_bytes: int = 262_144) -> Broker:
    """A facade's broker client: create_broker, as the facade makes it."""
    broker = create_broker(CommonSettings(broker_url=cluster.broker_url,
                                          redis_url=cluster.redis.url,
                                          redis_prefix=cluster.redis.prefix,
                                          claim_check_bytes=claim_check_bytes))
    await broker.start()
    cluster.closers.append(broker.aclose)
    return broker


async def serving(cluster: Cluster) -> None:
    """A worker serving echo16, once its queue is there: a facade sees it served."""
    await cluster.worker(preload=["echo16"])
    facade, _ = await cluster.facade()
    await wait_ready(facade)


@functools.cache
def echo16(repo: Path) -> ModelConfig:
    """Read once per test's repository: a scan takes ~20 ms, and the soak sends hundreds."""
    return ModelRepository(repo).get("echo16", 1).config


def request(cluster: Cluster, seed: int, timeout: float = 30.0) -> PredictRequest:
    return PredictRequest.admit(echo16(cluster.repo), inputs(seed), None, max_elements=N,
                                deadline=time.time() + timeout, request_id=f"r{seed}")


async def expire_queued(cluster: Cluster, broker: Broker, seeds: Iterable[int]) -> None:
    """Requests that expire in the queue of echo16, which no worker consumes yet."""
    async def expire(seed: int) -> None:
        with pytest.raises(Exception, match=r"deadline|did not answer"):
            await broker.request(request(cluster, seed, timeout=0.5))
    await asyncio.gather(*map(expire, seeds))


async def leave_queued(cluster: Cluster, broker: Broker, store: redis.Redis,
                       seeds: Sequence[int]) -> None:
    """Requests whose callers leave once they wait in the queue of echo16, which no worker
    consumes yet (and which holds nothing else). Their blobs are deleted by the facade if the
    caller left before the broker confirmed the publish, else by the worker at the ack (and
    the reply's, unread, by the facade)."""
    waiting = [asyncio.create_task(broker.request(request(cluster, seed))) for seed in seeds]

    async def queued() -> bool:
        return await broker.queue_depth("echo16", 1) == len(waiting)
    await until_true(queued)
    assert len(await blobs(store, cluster.redis)) == 2 * len(waiting)
    for task in waiting:
        task.cancel()  # the caller leaves: a cancel notice, or a reply nobody reads
    for task in waiting:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_large_tensors_cross_by_reference_both_ways_and_no_blob_is_left(
        running: Cluster, store: redis.Redis) -> None:
    broker = await client(running)
    await broker.declare_queue("echo16", 1, 1024)  # queued before any worker: model.yaml's length
    waiting = asyncio.create_task(broker.request(request(running, 1)))
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue("inferno.echo16.v1")
        async with queue.iterator() as messages:
            message = await asyncio.wait_for(anext(messages), 10)
        keys = str(message.headers[HEADER_CLAIMS]).split(",")
        assert len(message.body) < 1024, "the tensors travelled in the message"
        assert sorted(keys) == sorted(k.decode() for k in await blobs(store, running.redis))
        assert len(keys) == 2
        for key in keys:  # the backstop: they expire with the request's deadline
            assert 0 < await store.pttl(key) <= 30_000
            assert await store.strlen(key) == 2 * N
        await message.reject(requeue=True)

    await running.worker(preload=["echo16"])
    reply = await asyncio.wait_for(waiting, 30)
    given = inputs(1)
    np.testing.assert_array_equal(reply.result()["bf16"], given["bf16"])
    np.testing.assert_array_equal(reply.result()["fp16"], given["fp16"])
    np.testing.assert_array_equal(reply.result()["fp16_f32"], given["fp16"].astype(np.float32))
    await none_left(store, running.redis)  # the request's, at the ack; the reply's, as read


async def test_concurrent_requests_each_get_their_own_tensors(
        running: Cluster, store: redis.Redis) -> None:
    await running.worker(preload=["echo16"])
    broker = await client(running)
    replies = await asyncio.wait_for(asyncio.gather(
        *(broker.request(request(running, seed)) for seed in range(8))), 60)
    for seed, reply in enumerate(replies):
        np.testing.assert_array_equal(reply.result()["fp16"], inputs(seed)["fp16"])
    await none_left(store, running.redis)


async def test_a_facade_that_claims_nothing_still_reads_the_claims_of_replies(
        running: Cluster, store: redis.Redis) -> None:
    await running.worker(preload=["echo16"])  # claims its outputs of 256 KiB and more
    broker = await client(running, claim_check_bytes=0)
    reply = await asyncio.wait_for(broker.request(request(running, 5)), 30)
    np.testing.assert_array_equal(reply.result()["bf16_f32"].view(np.uint32) >> 16,
                                  inputs(5)["bf16"])
    await none_left(store, running.redis)


async def test_a_request_that_expires_in_the_queue_leaves_no_blob(
        running: Cluster, store: redis.Redis) -> None:
    broker = await client(running)
    await broker.declare_queue("echo16", 1, 1024)  # no worker: dropped at its deadline
    await expire_queued(running, broker, [2])
    await none_left(store, running.redis)


async def test_a_request_whose_caller_left_leaves_no_blob(
        running: Cluster, store: redis.Redis) -> None:
    broker = await client(running)
    await broker.declare_queue("echo16", 1, 1024)  # queued before any worker: model.yaml's length
    await leave_queued(running, broker, store, [4])
    await running.worker(preload=["echo16"])
    await none_left(store, running.redis)


SOAK = 200
"""Answered requests of the soak, 3.2 MB through Redis each (two inputs of 400 KB, outputs of
2.4 MB): 640 MB in all."""
GROWTH_TOLERANCE = 4 << 20
"""What Redis may hold more after the soak than before: the connections the soak opened stay open
until the cluster closes (a few KB each; ~0.2 MB in all once trimmed), and other tests share this
Redis. A blob left behind shows in the key count, exactly."""


async def used_memory(store: redis.Redis) -> int:
    return int((await store.info("memory"))["used_memory"])


async def test_redis_memory_returns_to_where_it_started_after_a_soak(
        running: Cluster, store: redis.Redis) -> None:
    """Concurrent requests with large inputs and outputs, after some whose callers left and
    some that expired in the queue: no blob is left, and Redis frees what they held."""
    before = await used_memory(store)
    assert not await blobs(store, running.redis)
    broker = await client(running)
    await broker.declare_queue("echo16", 1, 1024)  # queued before any worker: model.yaml's length
    await leave_queued(running, broker, store, range(20))
    await expire_queued(running, broker, range(20, 40))
    await running.worker(preload=["echo16"])
    # All at once: more stores and reads than the blob store's connections (they wait for one;
    # redis-py's own pool refused its 101st with MaxConnectionsError).
    requests = [request(running, seed) for seed in range(40, 40 + SOAK)]
    replies = await asyncio.wait_for(asyncio.gather(*map(broker.request, requests)), 60)
    for sent, reply in zip(requests, replies, strict=True):
        np.testing.assert_array_equal(reply.result()["fp16"], sent.inputs["fp16"])
    await none_left(store, running.redis)

    # Redis trims the query buffer a blob grew on each connection in its clients cron, a
    # second or two after the connection went idle: wait for it, then say by how much.
    async def freed() -> bool:
        return await used_memory(store) - before <= GROWTH_TOLERANCE
    with contextlib.suppress(TimeoutError):
        await until_true(freed)
    grown = await used_memory(store) - before
    assert grown <= GROWTH_TOLERANCE, f"Redis holds {grown} bytes more than before the soak"


async def test_a_request_redelivered_after_its_worker_died_keeps_its_blobs_until_answered(
        running: Cluster, store: redis.Redis) -> None:
    port = free_port()
    victim = running.worker_process(INFERNO_PRELOAD="slow", INFERNO_METRICS_PORT=str(port))
    facade, _ = await running.facade()
    await wait_ready(facade)
    broker = await client(running)
    config = ModelRepository(running.repo).get("slow", 1).config
    x = np.arange(70_000, dtype=np.float32).reshape(1, -1)  # 280 KB, both ways
    waiting = asyncio.create_task(broker.request(PredictRequest.admit(
        config, {"x": x, "delay_ms": np.array([2000.0], np.float32)}, None,
        max_elements=N, deadline=time.time() + 60)))
    await until(lambda: scrape(port, 'infer_batch_size_count{model="slow"}') >= 1)
    victim.send_signal(signal.SIGKILL)  # mid-batch: the request is unacknowledged
    assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL
    assert len(await blobs(store, running.redis)) == 1  # the request's, kept for a redelivery
    await running.worker(preload=["slow"])
    reply = await asyncio.wait_for(waiting, 30)
    np.testing.assert_array_equal(reply.result()["y"], x)
    await none_left(store, running.redis)


async def _produce(cluster: Cluster, store: redis.Redis, blob: bytes | None, key: str
                   ) -> tuple[str, PredictReply]:
    """A producer's request whose ``fp16`` claims ``key`` (which it stored ``blob`` under,
    unless ``None``); the reply's status, and the reply."""
    if blob is not None:
        await store.set(key, blob, px=30_000)
    claims = iter([None, key])  # bf16 in the message, then fp16 by reference
    body = encode_frame(inputs(3), BF16, claim=lambda _: next(claims))
    async with await aio_pika.connect_robust(cluster.broker_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange("inferno.predict")
        replies = await channel.declare_queue(exclusive=True)
        await exchange.publish(aio_pika.Message(
            body, content_type="application/x-inferno-tensors", correlation_id="p",
            reply_to=replies.name, expiration=30,
            headers={**request_headers(time.time() + 30), HEADER_CLAIMS: key}),
            routing_key="echo16.v1", mandatory=True)
        async with asyncio.timeout(30), replies.iterator() as messages:
            async for message in messages:
                status = message.headers[HEADER_STATUS]
                claimed = message.headers.get(HEADER_CLAIMS)
                reply = decode_reply(message.body, str(status), None if claimed is None else {
                    k: await store.getdel(k) for k in str(claimed).split(",")})
                await message.ack()
                return str(status), reply
    raise AssertionError("no reply")


async def test_a_producer_claims_a_blob_it_stored(running: Cluster, store: redis.Redis) -> None:
    await serving(running)
    given = inputs(3)
    key = f"{running.redis.prefix}:blob:producer-1"
    status, reply = await _produce(running, store, given["fp16"].tobytes(), key)
    assert status == "ok"
    np.testing.assert_array_equal(reply.result()["fp16"], given["fp16"])
    await none_left(store, running.redis)


@pytest.mark.parametrize(("stored", "why"), [
    (b"", "holds 0 bytes, not the 400000"),
    (None, "is not in the store"),
], ids=["wrong size", "missing"])
async def test_a_claim_to_a_wrong_or_missing_blob_is_invalid_input(
        running: Cluster, store: redis.Redis, stored: bytes | None, why: str) -> None:
    await serving(running)
    key = f"{running.redis.prefix}:blob:producer-2"
    status, reply = await _produce(running, store, stored, key)
    assert status == "invalid_input"
    with pytest.raises(InvalidInput, match=why):
        reply.result()
    await none_left(store, running.redis)  # refused for good: deleted


async def test_a_claim_outside_the_blob_namespace_is_refused_and_left_alone(
        running: Cluster, store: redis.Redis) -> None:
    await serving(running)
    key = f"{running.redis.prefix}:secret"  # a key of the store that is no blob
    status, reply = await _produce(running, store, inputs(3)["fp16"].tobytes(), key)
    assert status == "invalid_input"
    with pytest.raises(InvalidInput, match="outside the blob store's namespace"):
        reply.result()
    assert await store.exists(key), "the worker deleted a key it had no claim to"
