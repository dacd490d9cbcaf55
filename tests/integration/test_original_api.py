"""Users migrate from the original Inferno (one FastAPI process, the same v1 API): its request
shape works unchanged, ``base64`` tensors included.

The original README's example predicts with raw little-endian bytes under ``base64`` and the
shape and dtype beside them; here it is adapted to the sample ``mlp`` (256 float32 features).
"""

from __future__ import annotations

import base64

import httpx
import numpy as np

from tests.integration.conftest import x_rows


def original_example(x: np.ndarray) -> dict[str, object]:
    return {"inputs": {"x": {"base64": base64.b64encode(x.astype("<f4").tobytes()).decode(),
                             "shape": list(x.shape), "dtype": "float32"}}}


async def test_the_original_readme_request_with_base64_bytes(client: httpx.AsyncClient) -> None:
    x = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 256)
    original = await client.post("/v1/models/mlp:predict", json=original_example(x))
    as_data = await client.post("/v1/models/mlp:predict",
                                json={"inputs": {"x": {"data": x.tolist()}}})
    assert original.status_code == as_data.status_code == 200, original.text
    body = original.json()
    assert (body["model"], body["version"]) == ("mlp", 2)
    assert body["outputs"]["probs"]["shape"] == [2, 10]
    np.testing.assert_allclose(body["outputs"]["probs"]["data"],
                               as_data.json()["outputs"]["probs"]["data"], rtol=1e-6)


async def test_base64_and_b64_are_the_same_key(client: httpx.AsyncClient) -> None:
    x = np.full((1, 256), 0.25, np.float32)
    payload = original_example(x)
    by_b64 = {"inputs": {"x": {"b64": payload["inputs"]["x"]["base64"],  # type: ignore[index]
                               "shape": [1, 256]}}}
    first = await client.post("/v1/models/mlp/versions/2:predict", json=payload)
    second = await client.post("/v1/models/mlp/versions/2:predict", json=by_b64)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()


async def test_an_empty_inputs_object_names_the_missing_inputs(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", json={"inputs": {}})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_input", "message": "Missing required input(s): x. Expected inputs: x"}
    # The model keeps serving.
    assert (await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
            ).status_code == 200
