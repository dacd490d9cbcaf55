"""The v2 API over raw HTTP (httpx), for what tritonclient cannot express: malformed binary
bodies, header values, ``data`` layouts, parameters, the error format and readiness statuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.v2.conftest import BAD_VERSION, Served, ServeEmbedded, unknown

pytestmark = pytest.mark.asyncio

HEADER = "Inference-Header-Content-Length"
TOKENS = np.array([[5, 7, 9, 2**62]], dtype=np.int64)
MASK = np.array([[True, True, False, True]])
BAG_JSON = [{"name": "tokens", "datatype": "INT64", "shape": [1, 4], "data": TOKENS.tolist()},
            {"name": "mask", "datatype": "BOOL", "shape": [1, 4], "data": MASK.tolist()}]
BAG_SUM = 5 + 7 + 2**62


def bag_binary(tokens_size: int = 32, mask_size: int = 4) -> list[dict[str, Any]]:
    return [{"name": "tokens", "datatype": "INT64", "shape": [1, 4],
             "parameters": {"binary_data_size": tokens_size}},
            {"name": "mask", "datatype": "BOOL", "shape": [1, 4],
             "parameters": {"binary_data_size": mask_size}}]


def framed(head: dict[str, Any], data: bytes, pad: int = 0) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: the JSON header (``pad`` spaces longer), then ``data``."""
    header = json.dumps(head).encode() + b" " * pad
    return header + data, {HEADER: str(len(header))}


async def infer(server: Served, model: str, head: dict[str, Any], data: bytes = b"",
                **headers: str) -> httpx.Response:
    body, framing = framed(head, data) if data else (json.dumps(head).encode(), {})
    return await server.http.post(f"/v2/models/{model}/infer", content=body,
                                  headers={**framing, **headers})


def error_of(response: httpx.Response, status: int = 400) -> str:
    """The v2 error format: one key, ``error``, holding the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def outputs_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


async def test_binary_outputs_follow_the_json_header(server: Served) -> None:
    response = await infer(server, "bag", {"inputs": bag_binary(), "id": "r-1",
                                           "parameters": {"binary_data_output": True}},
                           TOKENS.tobytes() + MASK.tobytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    head = json.loads(response.content[:length])
    assert head == {"model_name": "bag", "model_version": "1", "id": "r-1", "outputs": [
        {"name": n, "datatype": t, "shape": [1], "parameters": {"binary_data_size": s}}
        for n, t, s in (("sum", "INT64", 8), ("count", "INT64", 8), ("mean", "FP32", 4))]}
    raw = response.content[length:]
    assert len(raw) == 20
    assert np.frombuffer(raw[:8], "<i8").tolist() == [BAG_SUM]
    assert np.frombuffer(raw[8:16], "<i8").tolist() == [3]
    assert np.frombuffer(raw[16:], "<f4").tolist() == [np.float32(BAG_SUM / 3)]
    # A per-output binary_data overrides binary_data_output, and the order asked for is kept.
    mixed = await infer(server, "bag", {"inputs": BAG_JSON, "parameters": {
        "binary_data_output": True}, "outputs": [
        {"name": "count"}, {"name": "sum", "parameters": {"binary_data": False}}]})
    length = int(mixed.headers[HEADER])
    assert [o.get("data") for o in json.loads(mixed.content[:length])["outputs"]] == [
        None, [BAG_SUM]]
    assert np.frombuffer(mixed.content[length:], "<i8").tolist() == [3]
    # No binary output: a plain JSON response, without the header.
    plain = await infer(server, "bag", {"inputs": bag_binary()},
                        TOKENS.tobytes() + MASK.tobytes())
    assert plain.headers["content-type"] == "application/json" and HEADER not in plain.headers
    got = outputs_of(plain)
    assert (got["sum"], got["count"]) == ([BAG_SUM], [3])
    # JSON carries FP32 as the shortest decimal that reads back as the same float32.
    assert np.float32(got["mean"][0]) == np.float32(BAG_SUM / 3)


async def test_binary_and_json_inputs_mix_in_one_request(server: Served) -> None:
    head = {"inputs": [bag_binary()[0], BAG_JSON[1]], "outputs": [{"name": "sum"}]}
    assert outputs_of(await infer(server, "bag", head, TOKENS.tobytes())) == {"sum": [BAG_SUM]}


@pytest.mark.parametrize(("value", "message"), [
    ("+1", "inference-header-content-length {} does not fit a body of {} bytes"),
    ("0", "inference-header-content-length 0 does not fit a body of {1} bytes"),
])
async def test_header_length_must_fit_the_body(server: Served, value: str, message: str) -> None:
    body, _ = framed({"inputs": bag_binary()}, TOKENS.tobytes() + MASK.tobytes())
    length = len(body) + 1 if value == "+1" else int(value)
    response = await server.http.post("/v2/models/bag/infer", content=body,
                                      headers={HEADER: str(length)})
    assert error_of(response) == message.format(length, len(body))


async def test_header_length_must_be_a_number(server: Served) -> None:
    body, _ = framed({"inputs": bag_binary()}, TOKENS.tobytes() + MASK.tobytes())
    messages = {}
    for value in ("abc", "-5", "1.5"):
        response = await server.http.post("/v2/models/bag/infer", content=body,
                                          headers={HEADER: value})
        messages[value] = error_of(response)
    assert messages == {value: f"inference-header-content-length must be a number of bytes, "
                               f"got '{value}'" for value in ("abc", "-5", "1.5")}


async def test_binary_data_must_match_the_shapes(server: Served) -> None:
    tokens, mask = TOKENS.tobytes(), MASK.tobytes()
    cases = {"size not the shape's": ((24, 4), tokens[:24] + mask),
             "body too short": ((32, 4), tokens + mask[:3]),
             "unclaimed bytes": ((32, 4), tokens + mask + b"1234")}
    assert {case: error_of(await infer(server, "bag", {"inputs": bag_binary(*sizes)}, data))
            for case, (sizes, data) in cases.items()} == {
        "size not the shape's": "Input 'tokens': shape [1, 4] of INT64 needs 32 bytes; "
                                "binary_data_size is 24 with 28 bytes left in the body",
        "body too short": "Input 'mask': shape [1, 4] of BOOL needs 4 bytes; "
                          "binary_data_size is 4 with 3 bytes left in the body",
        "unclaimed bytes": "4 bytes of binary data are not claimed by any input's "
                           "binary_data_size"}


async def test_flat_and_nested_data(server: Served) -> None:
    def bag(tokens: Any, mask: Any, shape: list[int]) -> dict[str, Any]:
        return {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": shape, "data": tokens},
                           {"name": "mask", "datatype": "BOOL", "shape": shape, "data": mask}]}

    nested = bag([[1, 2], [3, 4]], [[True, True], [False, True]], [2, 2])
    flat = bag([1, 2, 3, 4], [True, True, False, True], [2, 2])
    expected = {"sum": [3, 4], "count": [2, 1], "mean": [1.5, 4.0]}
    assert outputs_of(await infer(server, "bag", nested)) == expected
    assert outputs_of(await infer(server, "bag", flat)) == expected
    # Output data is always flat, row-major, with the shape beside it.
    probs = (await infer(server, "mlp", {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 256], "data": [0.5] * 512}],
        "outputs": [{"name": "probs"}]})).json()["outputs"][0]
    assert probs["shape"] == [2, 10] and len(probs["data"]) == 20
    wrong_nesting = bag([[1, 2, 3, 4]], [[True] * 4], [2, 2])
    assert error_of(await infer(server, "bag", wrong_nesting)) == (
        "Input 'tokens': 'shape' [2, 2] does not match the data's shape [1, 4]")
    too_few = bag([1, 2, 3], [True] * 4, [2, 2])
    assert error_of(await infer(server, "bag", too_few)) == (
        "Input 'tokens': 'shape' [2, 2] does not match the data's shape [3]")


async def test_unknown_parameters_are_ignored(server: Served) -> None:
    head = {"id": "p", "parameters": {"tenant": "a", "sequence_id": 0, "priority": 2},
            "inputs": [{**t, "parameters": {"note": "x"}} for t in BAG_JSON],
            "outputs": [{"name": "sum", "parameters": {"classification": 0, "other": [1]}}]}
    response = await infer(server, "bag", head)
    assert outputs_of(response) == {"sum": [BAG_SUM]} and response.json()["id"] == "p"


async def test_timeout_parameter_must_be_a_positive_number(server: Served) -> None:
    for timeout in (-1, 0, "5000", True, [1]):
        response = await infer(server, "bag", {"inputs": BAG_JSON,
                                               "parameters": {"timeout": timeout}})
        assert error_of(response) == (
            "parameter 'timeout' must be a positive number of microseconds"), timeout


async def test_empty_outputs_list_means_every_output(server: Served) -> None:
    response = await infer(server, "bag", {"inputs": BAG_JSON, "outputs": []})
    assert list(outputs_of(response)) == ["sum", "count", "mean"]


INVALID: dict[str, tuple[Any, str]] = {
    "not JSON": (b"{not json", "Request body is not valid JSON: ..."),  # then orjson's words
    "not an object": (b"[1, 2]", "Request body must be a JSON object"),
    "inputs not a list": ({"inputs": {"tokens": {}}}, "'inputs' must be a list of tensors"),
    "input without a name": ({"inputs": [{"datatype": "INT64", "shape": [1], "data": [1]}]},
                             "Missing required input(s): mask, tokens. "
                             "Expected inputs: mask, tokens"),
    "duplicate input": ({"inputs": [BAG_JSON[0], BAG_JSON[0], BAG_JSON[1]]},
                        "Each input may be given only once"),
    "BYTES for INT64": ({"inputs": [{**BAG_JSON[0], "datatype": "BYTES", "data": ["a"] * 4},
                                    BAG_JSON[1]]},
                        "Input 'tokens': expected datatype INT64, got BYTES"),
    "unknown datatype": ({"inputs": [{**BAG_JSON[0], "datatype": "FP8"}, BAG_JSON[1]]},
                         "Input 'tokens': unsupported datatype 'FP8' (supported: BOOL, UINT8, "
                         "UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, "
                         "FP64, BYTES)"),
    "negative dim": ({"inputs": [{**BAG_JSON[0], "shape": [1, -4]}, BAG_JSON[1]]},
                     "Input 'tokens': 'shape' must be a list of non-negative integers"),
    "no data": ({"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, 4]},
                            BAG_JSON[1]]},
                "Input 'tokens': give 'data' or binary_data_size"),
    "float for int": ({"inputs": [{**BAG_JSON[0], "data": [[1.5, 2, 3, 4]]}, BAG_JSON[1]]},
                      "Input 'tokens': expected dtype int64, got float data"),
    "outputs not objects": ({"inputs": BAG_JSON, "outputs": ["sum"]},
                            "'outputs' must be a list of objects with a 'name'"),
    # binary_data_size without the header: the whole body is the JSON, no bytes follow it.
    "binary without the header": ({"inputs": bag_binary()},
                                  "Input 'tokens': shape [1, 4] of INT64 needs 32 bytes; "
                                  "binary_data_size is 32 with 0 bytes left in the body"),
}


async def test_invalid_input_is_400_with_the_error_string(server: Served) -> None:
    async def message(body: Any, expected: str) -> str:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        text = error_of(await server.http.post("/v2/models/bag/infer", content=raw))
        prefix = expected.removesuffix("...")
        return expected if prefix != expected and text.startswith(prefix) else text

    assert {case: await message(*case_) for case, case_ in INVALID.items()} == {
        case: text for case, (_, text) in INVALID.items()}


@pytest.mark.parametrize("where", ["request", "input", "output"])
async def test_parameters_that_are_not_an_object_are_400(server: Served, where: str) -> None:
    head: dict[str, Any] = {"inputs": [dict(t) for t in BAG_JSON], "outputs": [{"name": "sum"}]}
    holder = {"request": head, "input": head["inputs"][0], "output": head["outputs"][0]}[where]
    holder["parameters"] = "binary_data_output"
    assert "parameters" in error_of(await infer(server, "bag", head))


async def test_binary_data_size_must_be_an_integer(server: Served) -> None:
    head = {"inputs": [{**bag_binary()[0], "parameters": {"binary_data_size": 32.0}},
                       BAG_JSON[1]]}
    assert "binary_data_size" in error_of(await infer(server, "bag", head, TOKENS.tobytes()))


async def test_other_routes_answer_in_the_v2_error_format(server: Served) -> None:
    http = server.http
    assert error_of(await http.get("/v2/nothing"), 404) == "Not Found"
    assert error_of(await http.get("/v2/models/mlp/infer"), 405) == "Method Not Allowed"
    assert error_of(await http.get("/v2/models/mlp/versions/0")) == (
        f"{BAD_VERSION}'0': path.version: Input should be greater than or equal to 1")
    assert error_of(await http.post("/v2/models/mlp/versions/0/infer", content=b"{}")) == (
        f"{BAD_VERSION}'0': path.version: Input should be greater than or equal to 1")
    assert error_of(await http.get("/v2/models/mlp/versions/two/config")).startswith(
        f"{BAD_VERSION}'two': path.version: Input should be a valid integer")
    assert error_of(await http.get("/v2/models/nope"), 404) == (
        unknown("nope", "Model 'nope' not found in the repository"))


async def test_readiness_is_200_or_400_and_404_for_what_does_not_exist(server: Served) -> None:
    async def get(path: str) -> tuple[int, Any]:
        response = await server.http.get(path)
        return response.status_code, response.json()

    assert await get("/v2/health/live") == (200, {"live": True})
    assert await get("/v2/health/ready") == (200, {"ready": True})
    assert await get("/v2/models/mlp/ready") == (200, {"name": "mlp", "ready": True})
    assert await get("/v2/models/mlp/versions/2/ready") == (
        200, {"name": "mlp", "version": "2", "ready": True})
    assert await get("/v2/models/mlp/versions/1/ready") == (
        400, {"name": "mlp", "version": "1", "ready": False})
    assert await get("/v2/models/sum/ready") == (400, {"name": "sum", "ready": False})
    assert await get("/v2/models/mlp/versions/9/ready") == (
        404, {"error": unknown("mlp", "Model 'mlp' has no version 9 (versions: 1, 2)")})
    assert await get("/v2/models/nope/ready") == (
        404, {"error": unknown("nope", "Model 'nope' not found in the repository")})
    assert server.embedded is not None
    await server.embedded.worker.stop()
    await server.embedded.facade.view.refresh()
    assert await get("/v2/health/live") == (200, {"live": True})
    assert await get("/v2/health/ready") == (400, {"ready": False})
    assert await get("/v2/models/mlp/ready") == (400, {"name": "mlp", "ready": False})


PROBE_YAML = """\
name: probe
version: 1
format: python
entrypoint: model:create
signature:
  inputs: [{name: x, dtype: float32, shape: [batch, n]}]
  outputs: [{name: misaligned, dtype: int64, shape: [batch]}]
"""
PROBE_PY = """\
import torch


def create(context):
    def predict(inputs):
        x = inputs["x"]  # how far its data lies off a multiple of its element size
        return {"misaligned": torch.full((x.shape[0],), x.data_ptr() % x.element_size())}

    return predict
"""


async def test_binary_inputs_reach_the_model_aligned(repo: Path,
                                                     serve_embedded: ServeEmbedded) -> None:
    (repo / "probe" / "1").mkdir(parents=True)
    (repo / "probe" / "1" / "model.yaml").write_text(PROBE_YAML)
    (repo / "probe" / "1" / "model.py").write_text(PROBE_PY)
    server = await serve_embedded(preload=["probe"])
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                        "parameters": {"binary_data_size": 12}}]}
    seen = []
    for pad in range(4):  # the JSON header's length decides where the tensor's bytes start
        body, framing = framed(head, np.ones((1, 3), np.float32).tobytes(), pad)
        response = await server.http.post("/v2/models/probe/infer", content=body,
                                          headers=framing)
        seen.extend(outputs_of(response)["misaligned"])
    assert seen == [0, 0, 0, 0]
