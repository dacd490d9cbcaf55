"""Facade and worker as separate parts over the real broker and Redis."""

from __future__ import annotations

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
