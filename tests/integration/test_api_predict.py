"""v1 predict through HTTP (httpx over ASGI) against the embedded server and the sample models."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.integration.conftest import error_of, x_rows

pytestmark = pytest.mark.asyncio


async def test_predict_active_version_returns_every_output(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(2)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("mlp", 2)
    outputs = body["outputs"]
    assert set(outputs) == {"probs", "label", "logits"}
    assert outputs["probs"]["shape"] == [2, 10] and outputs["probs"]["dtype"] == "float32"
    assert np.allclose(np.sum(outputs["probs"]["data"], axis=1), 1.0, atol=1e-5)
    assert outputs["label"] == {"dtype": "int64", "shape": [2],
                                "data": np.argmax(outputs["logits"]["data"], axis=1).tolist()}
    assert response.headers["x-request-id"]


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)},
                                 headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_output_selection_and_base64_codec(client: httpx.AsyncClient) -> None:
    as_json = (await client.post("/v1/models/mlp:predict", json={
        "inputs": x_rows(3), "outputs": ["probs"]})).json()
    as_b64 = (await client.post("/v1/models/mlp:predict", json={
        "inputs": x_rows(3), "outputs": ["probs"], "codec": "base64"})).json()
    assert set(as_json["outputs"]) == {"probs"} == set(as_b64["outputs"])
    raw = np.frombuffer(base64.b64decode(as_b64["outputs"]["probs"]["b64"]), "<f4")
    assert np.allclose(raw.reshape(3, 10), as_json["outputs"]["probs"]["data"])


async def test_base64_input_equals_json_input(client: httpx.AsyncClient) -> None:
    x = np.random.default_rng(0).standard_normal((2, 256)).astype("<f4")
    via_b64 = await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {
        "b64": base64.b64encode(x.tobytes()).decode(), "shape": [2, 256],
        "dtype": "float32"}}})
    via_json = await client.post("/v1/models/mlp:predict",
                                 json={"inputs": {"x": {"data": x.tolist()}}})
    assert via_b64.status_code == via_json.status_code == 200
    assert np.allclose(via_b64.json()["outputs"]["logits"]["data"],
                       via_json.json()["outputs"]["logits"]["data"], atol=1e-5)


async def test_flat_data_with_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {
        "data": [0.25] * 512, "shape": [2, 256]}}})
    assert response.status_code == 200
    assert response.json()["outputs"]["label"]["shape"] == [2]


async def test_python_model_with_symbolic_dims(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/bag:predict", json={"inputs": {
        "tokens": {"data": [[1, 2, 3], [4, 5, 6]]},
        "mask": {"data": [[True, False, True], [False, False, False]]}}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["sum"]["data"] == [4, 0]
    assert outputs["count"]["data"] == [2, 0]
    assert outputs["mean"]["data"] == [2.0, 0.0]


@pytest.mark.parametrize(("body", "message"), [
    ({"inputs": {"mask": {"data": [[True]]}}},
     "Missing required input(s): tokens. Expected inputs: mask, tokens"),
    ({"inputs": {"tokens": {"data": [[1]]}, "mask": {"data": [[True]]}, "extra": {"data": [1]}}},
     "Unexpected input(s): extra. Expected inputs: mask, tokens"),
    ({"inputs": {"tokens": {"data": [[1.5]]}, "mask": {"data": [[True]]}}},
     "Input 'tokens': expected dtype int64, got float data"),
    ({"inputs": {"tokens": {"data": [[1]], "dtype": "int32"}, "mask": {"data": [[True]]}}},
     "Input 'tokens': expected dtype int64, got int32"),
    ({"inputs": {"tokens": {"data": [[1, 2]]}, "mask": {"data": [[True]]}}},
     "Input 'mask': dimension 'seq' is 1 here but 2 in input 'tokens'"),
    ({"inputs": {"tokens": {"data": [1, 2]}, "mask": {"data": [[True]]}}},
     "Input 'tokens': expected shape [batch, seq] (2 dims), got [2]"),
    ({"inputs": {"tokens": {"data": [[1], [2, 3]]}, "mask": {"data": [[True]]}}},
     "Input 'tokens': 'data' is not a rectangular array"),
    ({"inputs": {"tokens": {"data": [[1]]}, "mask": {"data": [[True]]}}, "outputs": ["nope"]},
     "Unknown output(s): nope. Available outputs: count, mean, sum"),
    ({"inputs": {"tokens": {"data": [[1]]}, "mask": {"data": [[True]]}}, "codec": "xml"},
     "Unknown codec 'xml'"),
    ({"inputs": {"tokens": {"data": [[1]]}, "mask": {"data": [[True]]}}, "timeout_ms": -5},
     "'timeout_ms' must be a positive number"),
    ({"inputs": {"tokens": {"data": [[1]], "b64": "AQ=="}, "mask": {"data": [[True]]}}},
     "Input 'tokens': give exactly one of 'data' or 'b64'"),
    ({"inputs": []}, "'inputs' must be an object"),
    ({"inputs": {}}, "Missing required input(s): mask, tokens. Expected inputs: mask, tokens"),
    ({"inputs": {"tokens": {"base64": "AQ==", "b64": "AQ==", "shape": [1, 1]},
                 "mask": {"data": [[True]]}}},
     "Input 'tokens': give exactly one of 'data' or 'b64' ('base64' is the same as 'b64'), "
     "got b64 and base64"),
    ({"inputs": {"tokens": {"base64": "AQ==", "data": [[1]], "shape": [1, 1]},
                 "mask": {"data": [[True]]}}},
     "got data and base64"),
    ({"inputs": {"tokens": {"base64": "AQ=="}, "mask": {"data": [[True]]}}},
     "Input 'tokens': 'shape' is required with 'base64'"),
    ([1, 2], "Request body must be a JSON object"),
])
async def test_invalid_input_is_422_with_a_message_naming_the_field(
        client: httpx.AsyncClient, body: object, message: str) -> None:
    response = await client.post("/v1/models/bag:predict", json=body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert message in error["message"]


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert "not valid JSON" in error_of(response)["message"]


async def test_batch_larger_than_max_batch_size_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(65)})
    assert response.status_code == 422
    assert "exceeds max_batch_size 64" in error_of(response)["message"]


async def test_unknown_model_and_version_are_404(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/models/nope:predict", json={"inputs": x_rows(1)})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "model_not_found"
    no_such_version = await client.post("/v1/models/mlp/versions/9:predict",
                                        json={"inputs": x_rows(1)})
    assert no_such_version.status_code == 404
    assert "has no version 9" in error_of(no_such_version)["message"]
    unloaded = await client.post("/v1/models/mlp/versions/1:predict", json={"inputs": x_rows(1)})
    assert unloaded.status_code == 404
    assert error_of(unloaded) == {"code": "model_not_loaded", "message":
                                  "Model 'mlp' version 1 is not loaded (loaded: 2)"}


async def test_version_in_body_pins_the_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/mlp:predict",
                                 json={"inputs": x_rows(1), "version": 1})
    assert response.status_code == 404
    assert "version 1 is not loaded" in error_of(response)["message"]


async def test_body_over_the_limit_is_413(start_server) -> None:  # type: ignore[no-untyped-def]
    _, client = await start_server(max_body_bytes=4096)
    big = {"inputs": x_rows(8)}  # ~16 KB of JSON
    declared = await client.post("/v1/models/mlp:predict", json=big)
    assert declared.status_code == 413
    assert error_of(declared)["code"] == "payload_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: the limit is enforced while reading

    streamed = await client.post("/v1/models/mlp:predict", content=chunks())
    assert streamed.status_code == 413
    small = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
    assert small.status_code == 200


async def test_chunked_body_over_the_limit_on_an_admin_route_is_413(start_server) -> None:  # type: ignore[no-untyped-def]
    _, client = await start_server(max_body_bytes=4096)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000

    response = await client.post("/v1/models:load", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
