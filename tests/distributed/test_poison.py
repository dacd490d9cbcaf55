"""Poison requests: a request that kills every worker computing it, with real RabbitMQ and Redis.

The fake model ``poison`` (tests/models/poison) calls ``os._exit(71)`` on a batch holding the
value 666, as a segfault or an out-of-memory kill would end a worker: no reply, no ack. With
quorum queues and a delivery limit of 2, two ``inferno worker`` subprocesses (and a replacement
for every one that dies, as a supervisor would start one) serve it, while one in-process facade
sends the poison request among normal ones, at once, so that it shares their envelope and batch.

What must happen (docs/queue-protocol.md, "Poison requests"): the first crash returns the
poison request's envelope to the queue; redelivered, it moves to the retry queue as one message
per request; there the innocent ones are answered and the poison request kills a worker on each
of its delivery-limit + 1 deliveries, alone, until the broker dead-letters it; a worker's poison
responder then answers its caller with ``poison_request``, long before the deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field

import aio_pika
import httpx
import numpy as np
import pytest
import redis.asyncio as redis

from common.transport.amqp.broker import DEAD_LETTER_QUEUE
from common.transport.amqp.dead_letter import POISON_QUEUE
from common.transport.amqp.retry import retry_queue_name
from common.wire.messages import queue_name
from harness.services import rabbitmqctl
from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import error_of

pytestmark = pytest.mark.asyncio

LIMIT = 2
EXIT_STATUS = 71  # tests/models/poison/1/model.py
TIMEOUT_MS = 180_000  # worker restarts dominate: slow on a loaded machine
NORMAL = 11


@dataclass
class Supervisor:
    """Keeps ``count`` workers running: a replacement for every one that exits."""

    cluster: Cluster
    env: dict[str, str]
    deaths: list[tuple[int, str]] = field(default_factory=list)
    """(exit status, the end of its stderr) of every worker that exited."""
    died: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, count: int) -> None:
        self.tasks = [asyncio.create_task(self._keep()) for _ in range(count)]

    async def _keep(self) -> None:
        while True:
            process = self.cluster.worker_process(**self.env)
            status = await asyncio.to_thread(process.wait)  # the process's own exit: an event
            self.deaths.append((status, _stderr_tail(process)))
            self.died.set()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


def _stderr_tail(process: subprocess.Popen[bytes]) -> str:
    return process.stderr.read().decode()[-2000:] if process.stderr else ""


def queue_messages(vhost: str) -> dict[str, tuple[int, int]]:
    """Every queue of the vhost: (ready, unacknowledged) messages."""
    counts = {}
    for line in rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name",
                            "messages_ready", "messages_unacknowledged").splitlines():
        name, ready, unacked = line.split()
        counts[name] = (int(ready), int(unacked))
    return counts


def x(i: int) -> list[list[float]]:
    return [[float(i), i + 0.5]]


@pytest.mark.parametrize("claim_check_bytes", [262_144, 8], ids=["in messages", "by reference"])
async def test_poison_request_is_answered_and_others_are_served(
        running: Cluster, claim_check_bytes: int) -> None:
    """By reference: every tensor (8 bytes) crosses through Redis, and the poison request's
    blob goes with its dead letter. Others may be left by the workers that died (a reply's,
    stored before the crash): those expire with their requests' deadlines."""
    supervisor = Supervisor(running, {
        "INFERNO_PRELOAD": "poison", "INFERNO_MODELS": "poison", "INFERNO_QUEUE_TYPE": "quorum",
        "INFERNO_QUEUE_DELIVERY_LIMIT": str(LIMIT),
        "INFERNO_CLAIM_CHECK_BYTES": str(claim_check_bytes)})
    supervisor.start(2)
    try:
        await _serve_a_poison_request(running, supervisor, claim_check_bytes)
    finally:
        supervisor.stop()
    store = redis.Redis.from_url(running.redis.url)
    poison = np.array([[666.0, 1.0]], np.float32).tobytes()

    async def blobs() -> list[bytes]:
        return [key async for key in store.scan_iter(f"{running.redis.prefix}:blob:*")]

    try:
        async with asyncio.timeout(30):
            while poison in [await store.get(key) for key in await blobs()]:  # noqa: ASYNC110 - Redis tells no one of a deletion
                await asyncio.sleep(0.05)
        for key in await blobs():
            assert 0 < await store.pttl(key) <= TIMEOUT_MS, key
    finally:
        await store.aclose()


async def _serve_a_poison_request(running: Cluster, supervisor: Supervisor,
                                  claim_check_bytes: int) -> None:
    facade, client = await running.facade(claim_check_bytes=claim_check_bytes)
    await wait_ready(facade)
    view = facade.view
    assert await view.wait_for(lambda: True if view.serving("poison", 1) == 2 else None, 60)

    async def predict(data: list[list[float]]) -> tuple[httpx.Response, float]:
        response = await client.post("/v1/models/poison:predict", json={
            "inputs": {"x": {"data": data}}, "timeout_ms": TIMEOUT_MS})
        return response, time.monotonic() - started

    started = time.monotonic()
    # The poison request in the middle: the requests one event-loop turn of the facade decodes
    # travel in one envelope (here mostly two by two), so the poison request shares its
    # envelope, and its first batch, with innocent ones.
    calls = [predict(x(i)) for i in range(NORMAL // 2)] + [predict([[666.0, 1.0]])] + [
        predict(x(i)) for i in range(NORMAL // 2, NORMAL)]
    results = await asyncio.gather(*calls)
    poison, poison_s = results.pop(NORMAL // 2)

    # The poison caller learns it, typed, long before its deadline.
    assert poison.status_code == 500, poison.text
    error = error_of(poison)
    assert error["code"] == "poison_request", error
    assert "poison request" in error["message"] and f"{LIMIT + 1} times" in error["message"]
    assert poison_s < TIMEOUT_MS / 1000 / 2, f"answered after {poison_s:.1f}s"
    # Every other request is answered with its own result, the poison's envelope-mates too.
    for i, (response, _) in enumerate(results):
        assert response.status_code == 200, (i, response.text)
        assert response.json()["outputs"]["y"]["data"] == [[2.0 * i, 2 * i + 1.0]], i

    # One crash from the version's queue (the first delivery, in its envelope), then one per
    # delivery from the retry queue: the limit's worth of redeliveries and the first one.
    deaths = supervisor.deaths
    async with asyncio.timeout(30):  # the last exit may reach us after the reply it caused
        while len(deaths) < LIMIT + 2:
            supervisor.died.clear()
            await supervisor.died.wait()
    assert [status for status, _ in deaths] == [EXIT_STATUS] * (LIMIT + 2), deaths
    print(f"poison answered after {poison_s:.1f}s; {len(deaths)} workers died; innocent "
          f"requests answered after at most {max(s for _, s in results):.1f}s")

    # Clean-up: the poison responders took their copy, nothing is left queued or in hand
    # anywhere but the operators' dead-letter queue, which holds the dead-lettered request.
    vhost = running.broker_url.rsplit("/", 1)[1]
    model_queues = [queue_name("poison", 1), retry_queue_name("poison", 1), POISON_QUEUE]

    async def drained() -> bool:
        counts = queue_messages(vhost)
        return all(counts.get(q, (0, 0)) == (0, 0) for q in model_queues)

    async with asyncio.timeout(30):
        while not await drained():  # noqa: ASYNC110 - the broker has no "empty" event
            await asyncio.sleep(0.1)
    async with await aio_pika.connect(running.broker_url) as connection:
        channel = await connection.channel()
        dead = await channel.get_queue(DEAD_LETTER_QUEUE)
        letter = await dead.get(no_ack=True, fail=False)
        assert letter is not None
        death = dict((letter.headers or {})["x-death"][0])  # type: ignore[index,arg-type]
        assert death["reason"] == "delivery_limit" and death["queue"] == retry_queue_name(
            "poison", 1), death
        assert await dead.get(no_ack=True, fail=False) is None  # nothing else died
    assert queue_messages(vhost).get(DEAD_LETTER_QUEUE) == (0, 0)

    # The dead workers leave the facade's view; their replacements serve.
    assert await view.wait_for(lambda: True if view.serving("poison", 1) == 2 else None, 30)
    after = await client.post("/v1/models/poison:predict",
                              json={"inputs": {"x": {"data": x(3)}}})
    assert after.status_code == 200 and after.json()["outputs"]["y"]["data"] == [[6.0, 7.0]]
