"""Asynchronous producers: the example producer against the real broker, the alias it uses
following :activate, and a burst worker draining what producers queued while no worker ran."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aio_pika
import numpy as np
import orjson
import pytest

from common.errors import InvalidInput
from common.wire import (
    HEADER_STATUS,
    JSON_CONTENT_TYPE,
    TENSORS_CONTENT_TYPE,
    decode_reply,
    encode_frame,
)
from examples.producer import Producer, bag_request
from tests.distributed.conftest import ROOT, Cluster, queue_requests, replies_in, wait_ready
from worker.reconciler import Reconciler

pytestmark = pytest.mark.asyncio


async def test_example_producer_binary_and_json_bodies(running: Cluster) -> None:
    await running.worker(preload=["bag"])
    facade, _ = await running.facade()
    await wait_ready(facade)
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "examples/producer.py", "--url", running.broker_url, "--count", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    # tokens i..i+3 with mask [1, 1, 0, 1]: sum = 3i + 4, count 3.
    for index, line in enumerate(lines):
        assert line.startswith(f"{index} ")
        assert f"'sum': [{3 * index + 4}]" in line and "'count': [3]" in line


async def test_alias_follows_the_active_version(running: Cluster) -> None:
    await running.worker(preload=["mlp"])
    facade, client = await running.facade()
    await wait_ready(facade)
    body = encode_frame({"x": np.zeros((1, 256), np.float32)})
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        producer = await Producer.create(connection)
        before = await producer.predict("mlp", body, TENSORS_CONTENT_TYPE, timeout_s=10)
        assert before is not None and set(before) == {"probs", "label", "logits"}  # version 2
        activated = await client.post("/v1/models:activate", json={"name": "mlp", "version": 1})
        assert activated.status_code == 200
        await facade.view.wait_for(lambda: True if facade.view.serving("mlp", 1) else None, 30)
        # The worker re-points the alias when it sees the change; bounded wait for it.
        async with asyncio.timeout(30):
            while True:
                after = await producer.predict("mlp", body, TENSORS_CONTENT_TYPE, timeout_s=10)
                assert after is not None
                if set(after) == {"probs", "label"}:  # version 1
                    break
                await asyncio.sleep(0.05)


# --- requests that did not pass the facade ----------------------------------------------------
# A producer's message is validated by the worker with the facade's own check
# (Signature.validate_request) before it reaches the batcher.


async def test_a_producers_request_is_validated_and_run(running: Cluster) -> None:
    worker, registry = await running.worker(preload=["sum"])
    await _serving(running, worker, "sum")
    body = orjson.dumps({"inputs": {"x": {"data": [[1, 2], [3, 4]]}},
                        "outputs": ["total", "total"]})
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        producer = await Producer.create(connection)
        outputs = await producer.predict("sum", body, JSON_CONTENT_TYPE, timeout_s=10)
    assert outputs is not None and list(outputs) == ["total"]
    np.testing.assert_array_equal(outputs["total"], [3.0, 7.0])
    assert registry.get_sample_value("infer_batch_size_sum", {"model": "sum"}) == 2


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (encode_frame({"x": np.ones((1, 3), np.int64)}), TENSORS_CONTENT_TYPE,
     "Input 'x': expected dtype float32, got int64"),
    (encode_frame({"x": np.ones(3, np.float32)}), TENSORS_CONTENT_TYPE,
     "Input 'x': expected shape [batch, n]"),
    (encode_frame({}), TENSORS_CONTENT_TYPE, "Missing required input(s): x. Expected inputs: x"),
    (encode_frame({"x": np.ones((1, 3), np.float32), "y": np.ones((1, 3), np.float32)}),
     TENSORS_CONTENT_TYPE, "Unexpected input(s): y. Expected inputs: x"),
    (orjson.dumps({"inputs": {"x": {"data": [[1.0]]}}, "outputs": ["nope"]}),
     JSON_CONTENT_TYPE, "Unknown output(s): nope"),
    (encode_frame({"x": np.ones((17, 3), np.float32)}), TENSORS_CONTENT_TYPE,
     "Batch of 17 rows exceeds max_batch_size 16 of model 'sum'"),
    (encode_frame({"x": np.ones((0, 3), np.float32)}), TENSORS_CONTENT_TYPE,
     "The batch dimension must be at least 1"),
    (orjson.dumps({"inputs": {}}), JSON_CONTENT_TYPE, "Missing required input(s): x"),
], ids=["dtype", "rank", "missing", "unexpected", "unknown-output", "too-many-rows", "no-rows",
        "empty-json"])
async def test_an_invalid_producer_request_gets_invalid_input(
        running: Cluster, body: bytes, content_type: str, message: str) -> None:
    worker, registry = await running.worker(preload=["sum"])
    await _serving(running, worker, "sum")
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        producer = await Producer.create(connection)
        with pytest.raises(InvalidInput) as info:
            await producer.predict("sum", body, content_type, timeout_s=10)
        assert message in info.value.message
        # The worker goes on: the next request gets through, and the model never saw the bad one.
        good = encode_frame({"x": np.ones((1, 2), np.float32)})
        outputs = await producer.predict("sum", good, TENSORS_CONTENT_TYPE, timeout_s=10)
    assert outputs is not None
    np.testing.assert_array_equal(outputs["total"], [2.0])
    assert registry.get_sample_value("infer_batch_size_count", {"model": "sum"}) == 1


async def _serving(running: Cluster, worker: Reconciler, model: str) -> None:
    """Until the worker consumes the model's queue and its alias is bound (no facade here)."""
    async with asyncio.timeout(30):
        while model not in worker.loaded:
            await worker.reconcile()


async def test_a_burst_worker_drains_what_producers_queued_then_exits_0(running: Cluster) -> None:
    # With nothing queued, a burst declares the queue, binds the alias and returns at once.
    assert await running.burst(preload=["bag"], models=["bag"]) == {}
    count = 150  # a few times the worker's prefetch (2 x max_batch_size 32)
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        # Queued while no worker consumes.
        replies = await queue_requests(connection, "bag", [
            bag_request(index, as_json=index % 2 == 1) for index in range(count)])
        # The command line, its flags over an environment that names another model.
        result = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "inferno", "worker", "--burst", "--models", "bag",
            "--preload", "bag"], cwd=ROOT, env=running.env(INFERNO_MODELS="mlp",
                                                           INFERNO_PRELOAD="mlp"),
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "burst: drained bag:1" in result.stderr
        # It exited after answering: every reply is already in our queue.
        sums: dict[int, int] = {}
        for message in await replies_in(replies):
            status = message.headers.get(HEADER_STATUS)
            reply = decode_reply(message.body, status if isinstance(status, str) else None)
            sums[int(message.correlation_id or "")] = int(reply.result()["sum"][0])
    # tokens i..i+3 with mask [1, 1, 0, 1]: sum = 3i + 4.
    assert sums == {index: 3 * index + 4 for index in range(count)}
