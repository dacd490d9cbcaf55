"""Facade and worker as separate parts over the real broker and Redis."""

from __future__ import annotations

import asyncio

import pytest

from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import error_of, x_rows

pytestmark = pytest.mark.asyncio


async def test_predict_through_the_broker(running: Cluster) -> None:
    await running.worker(preload=["mlp", "bag"])
    facade, client = await running.facade()
    await wait_ready(facade)
    response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(3)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2 and body["outputs"]["probs"]["shape"] == [3, 10]
    bag = await client.post("/v1/models/bag:predict", json={"inputs": {
        "tokens": {"data": [[5, 7, 9]]}, "mask": {"data": [[True, True, False]]}},
        "outputs": ["sum"]})
    assert bag.json()["outputs"] == {"sum": {"dtype": "int64", "shape": [1], "data": [12]}}
    bad = await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {"data": [1.0]}}})
    assert bad.status_code == 422
    failing = await client.post("/v1/models/mlp/versions/1:predict", json={"inputs": x_rows(1)})
    assert error_of(failing)["code"] == "model_not_loaded"


async def test_concurrent_requests_each_get_their_own_answer(running: Cluster) -> None:
    """Requests that arrive together travel in envelopes and share batches: different sequence
    lengths (never one batch) and output selections, each answered with its own result."""
    _, registry = await running.worker(preload=["bag"])
    facade, client = await running.facade()
    await wait_ready(facade)

    def body(i: int) -> dict[str, object]:
        seq = 2 + i % 3
        tokens = [i * 10 + k for k in range(seq)]
        mask = [k != 1 for k in range(seq)]
        return {"inputs": {"tokens": {"data": [tokens]}, "mask": {"data": [mask]}},
                **({"outputs": ["sum", "count"]} if i % 2 else {})}

    responses = await asyncio.gather(*(client.post("/v1/models/bag:predict", json=body(i))
                                       for i in range(24)))
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        seq = 2 + i % 3
        kept = [i * 10 + k for k in range(seq) if k != 1]
        outputs = response.json()["outputs"]
        assert outputs["sum"]["data"] == [sum(kept)] and outputs["count"]["data"] == [len(kept)]
        assert ("mean" in outputs) == (i % 2 == 0)
    batches = registry.get_sample_value("infer_batch_size_count", {"model": "bag"})
    assert batches is not None and batches < 24, "requests that arrive together share batches"
