"""A load with a configuration override across a cluster (tests/distributed/conftest.py): a
facade and a worker that share only a RabbitMQ vhost and a Redis prefix. The override travels
through Redis: the worker loads the version with it from its own repository copy, and a second
facade, started after the load, shows and enforces it. A load's model files travel the same way
to a worker and a facade whose repository directories are their own."""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import numpy as np
import pytest

from common.errors import InvalidInput
from common.state.redis_store import RedisStateStore
from common.wire import TENSORS_CONTENT_TYPE, encode_frame
from examples.producer import Producer
from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.integration.conftest import make_repo
from tests.v2.conftest import Serve, tensor
from tests.v2.test_load_config import FOUR_ROWS, files_under, rows, sum_files

pytestmark = pytest.mark.asyncio


async def test_the_override_travels_through_the_state_store(
        running: Cluster, serve: Serve) -> None:  # noqa: F811 - running
    await running.worker(preload=["mlp"])
    first, _ = await running.facade()
    await wait_ready(first)
    server = await serve(first.app)
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(FOUR_ROWS)))

    # Redis holds it, and the worker's heartbeat says it runs with it.
    store = RedisStateStore(running.redis.url, running.redis.prefix)
    await store.start()
    try:
        override = (await store.models())["mlp"].overrides[2]
        assert json.loads(override) == {"batching": {
            "max_batch_size": 4, "max_batch_latency_ms": 2.0, "wait": "fill"}}
        assert [w.overrides for w in await store.workers()] == [{"mlp:2": override}]
    finally:
        await store.aclose()

    # A facade that was not there for the load shows it and admits by it.
    second, _ = await running.facade()
    await wait_ready(second)
    other = await serve(second.app)
    config = await other.triton(lambda c: c.get_model_config("mlp"))
    assert (config["max_batch_size"], config["dynamic_batching"]) == (
        4, {"max_queue_delay_microseconds": 2000})
    status, message = await other.refused(lambda c: c.infer("mlp", rows(5)))
    assert (status, message) == (400, "Batch of 5 rows exceeds max_batch_size 4 of model 'mlp'")

    # The worker itself runs with it: a producer's 5 rows, which no facade checked, are refused
    # by the worker's own admission; 4 rows are served.
    async with await aio_pika.connect_robust(running.broker_url) as connection:
        producer = await Producer.create(connection)
        with pytest.raises(InvalidInput) as refused:
            await producer.predict("mlp", encode_frame({"x": np.zeros((5, 256), np.float32)}),
                                   TENSORS_CONTENT_TYPE, timeout_s=10)
        assert "Batch of 5 rows exceeds max_batch_size 4" in refused.value.message
        served = await producer.predict("mlp", encode_frame({"x": np.zeros((4, 256),
                                                                           np.float32)}),
                                        TENSORS_CONTENT_TYPE, timeout_s=10)
        assert served is not None and served["label"].shape == (4,)

        # A load without a config, through the second facade, restores model.yaml's 64 rows
        # everywhere, the worker included.
        await other.triton(lambda c: c.load_model("mlp"))
        back = await producer.predict("mlp", encode_frame({"x": np.zeros((5, 256), np.float32)}),
                                      TENSORS_CONTENT_TYPE, timeout_s=10)
        assert back is not None and back["label"].shape == (5,)
    await first.view.refresh()
    assert (await server.triton(lambda c: c.get_model_config("mlp")))["max_batch_size"] == 64


async def test_model_files_reach_replicas_with_repositories_of_their_own(
        running: Cluster, serve: Serve, tmp_path: Path) -> None:  # noqa: F811 - running
    # Three hosts, as far as files go: the facade that takes the load, a worker and a second
    # facade each on a copy of the repository that nobody else writes.
    (tmp_path / "worker").mkdir()
    (tmp_path / "other").mkdir()
    worker_repo, other_repo = make_repo(tmp_path / "worker"), make_repo(tmp_path / "other")
    await running.worker(preload=["sum"], repo_root=worker_repo)
    first, _ = await running.facade(allow_model_files=True)
    second, _ = await running.facade(repo_root=other_repo)
    await wait_ready(first)
    await wait_ready(second)
    server = await serve(first.app)
    answer = await server.http.post("/v2/repository/models/sum/load",
                                    json={"parameters": sum_files(2)})
    assert answer.status_code == 200, answer.text

    # The worker wrote the version from the state store's copy and serves it; the second
    # facade, whose repository never had it either, routes to it.
    assert files_under(worker_repo / "sum") == files_under(running.repo / "sum") == [
        "1", "1/model.py", "1/model.yaml", "2", "2/model.py", "2/model.yaml"]
    other = await serve(second.app)
    await second.view.wait_for(lambda: True if second.view.serving("sum", 2) else None, 30)
    result = await other.triton(lambda c: c.infer(
        "sum", [tensor("x", np.ones((2, 3), np.float32))], model_version="2"))
    assert result.as_numpy("total").tolist() == [3.0, 3.0]
    assert files_under(other_repo / "sum") == files_under(worker_repo / "sum")
    assert (other_repo / "sum" / "2" / "model.py").read_bytes() == (
        running.repo / "sum" / "2" / "model.py").read_bytes()
