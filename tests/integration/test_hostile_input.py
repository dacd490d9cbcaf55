"""Hostile input against v1, v2 JSON and v2 binary: each case answers a clear status (never a 500)
and the server keeps serving afterwards.

Each case says what was tried. Statuses: v1 answers 422 ``invalid_input`` for a body that parses
but is wrong and 400 ``invalid_json`` for one that is not JSON at all; v2 answers 400 for both
(the protocol's rule, docs/api-v2.md); 413 for a body past ``INFERNO_MAX_BODY_BYTES`` on both.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from common.errors import InvalidInput
from common.model.signature import Signature
from common.wire.json_request import decode_json_inputs, parse_json_object
from tests.integration.conftest import Start, x_rows

ROOT = Path(__file__).resolve().parents[2]

GOOD_BAG = {"inputs": {"tokens": {"data": [[1, 2]]}, "mask": {"data": [[True, True]]}}}
V2_TOKENS = {"name": "tokens", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]}
V2_MASK = {"name": "mask", "datatype": "BOOL", "shape": [1, 2], "data": [True, True]}

INTS_MODEL = """\
name: ints
version: 1
format: python
entrypoint: model:create
signature:
  inputs:
    - {name: u8, dtype: uint8, shape: [batch, n]}
  outputs:
    - {name: total, dtype: float32, shape: [batch]}
batching: {max_batch_size: 8}
"""
INTS_CODE = """\
def create(context):
    def predict(inputs):
        return {"total": inputs["u8"].float().sum(dim=1)}
    return predict
"""


def add_model(repo: Path, name: str, yaml_text: str, code: str) -> Path:
    directory = repo / name / "1"
    directory.mkdir(parents=True)
    (directory / "model.yaml").write_text(yaml_text)
    (directory / "model.py").write_text(code)
    return directory


@pytest.fixture
async def client(start_server: Start, repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    add_model(repo, "ints", INTS_MODEL, INTS_CODE)
    _, http = await start_server(preload=["mlp", "bag", "ints"], max_elements_per_tensor=1000)
    yield http
    await assert_still_serving(http)


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    """After the hostile requests: the facade and the worker still answer good ones."""
    ok = await client.post("/v1/models/bag:predict", json=GOOD_BAG)
    assert ok.status_code == 200, ok.text
    v2 = await client.post("/v2/models/bag/infer", json={"inputs": [V2_TOKENS, V2_MASK]})
    assert v2.status_code == 200, v2.text


def check(response: httpx.Response, status: int, says: str, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    if response.request.url.path.startswith("/v2"):
        message = body["error"]
        assert isinstance(message, str)
    else:
        message = body["error"]["message"]
        expected = code or {400: "invalid_json", 413: "payload_too_large"}.get(
            status, "invalid_input")
        assert body["error"]["code"] == expected, body
    assert says in message, message


# -- body size and element limits ------------------------------------------------------------


async def test_body_over_the_byte_limit_is_413(start_server: Start) -> None:
    """Tried: a body one byte past INFERNO_MAX_BODY_BYTES (with content-length, and chunked
    without one) on v1 predict, v2 JSON infer, v2 binary infer and an admin route."""
    _, client = await start_server(max_body_bytes=1024)
    big = b"{" + b" " * 1024 + b"}"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 300

    for path, headers in [("/v1/models/bag:predict", {}), ("/v2/models/bag/infer", {}),
                          ("/v2/models/bag/infer", {"inference-header-content-length": "2"}),
                          ("/v1/models:load", {"content-type": "application/json"})]:
        check(await client.post(path, content=big, headers=headers), 413, "exceeds the limit")
        check(await client.post(path, content=chunks(), headers=headers), 413,
              "exceeds the limit")
    await assert_still_serving(client)


async def test_tensor_over_the_element_limit_is_422_naming_it(
        client: httpx.AsyncClient) -> None:
    """Tried: a tokens tensor of 2 x 600 = 1200 elements with INFERNO_MAX_ELEMENTS_PER_TENSOR
    1000, as v1 data, v1 b64, v2 JSON data and v2 binary."""
    tokens = np.ones((2, 600), np.int64)
    mask = {"data": [[True] * 600] * 2}
    says = "Input 'tokens': 1200 elements exceed the limit of 1000 per tensor"
    check(await client.post("/v1/models/bag:predict", json={"inputs": {
        "tokens": {"data": tokens.tolist()}, "mask": mask}}), 422, says)
    check(await client.post("/v1/models/bag:predict", json={"inputs": {
        "tokens": {"b64": base64.b64encode(tokens.tobytes()).decode(), "shape": [2, 600]},
        "mask": mask}}), 422, says)
    v2_mask = {**V2_MASK, "shape": [2, 600], "data": [True] * 1200}
    check(await client.post("/v2/models/bag/infer", json={"inputs": [
        {**V2_TOKENS, "shape": [2, 600], "data": tokens.ravel().tolist()}, v2_mask]}),
        400, says)
    header = json.dumps({"inputs": [
        {"name": "tokens", "datatype": "INT64", "shape": [2, 600],
         "parameters": {"binary_data_size": tokens.nbytes}}, v2_mask]}).encode()
    check(await client.post("/v2/models/bag/infer", content=header + tokens.tobytes(),
                            headers={"inference-header-content-length": str(len(header))}),
          400, says)


# -- JSON that is not JSON: 400 on v1 and v2 --------------------------------------------------

NOT_JSON = {
    "syntax": b"{not json",
    "truncated": b'{"inputs": {"tokens": ',
    "empty body": b"",
    "trailing garbage": b"{}x",
    "NaN literal in an integer tensor": b'{"inputs": {"tokens": {"data": [[NaN]]}}}',
    "Infinity literal": b'{"inputs": {"tokens": {"data": [[Infinity]]}}}',
    "number overflowing a double (1e999)": b'{"inputs": {"tokens": {"data": [[1e999]]}}}',
    "not UTF-8": b'{"\xff": 1}',
    "nested 10,000 levels": b"[" * 10_000 + b"]" * 10_000,
    "data nested 10,000 levels": b'{"inputs": {"tokens": {"data": ' + b"[" * 10_000
                                 + b"1" + b"]" * 10_000 + b"}}}",
}


@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    """Tried: each body above as v1 predict, v2 infer, and a v1 admin call (where FastAPI reads
    an empty body as a missing one, 422 ``Field required``, and accepts NaN)."""
    check(await client.post("/v1/models/bag:predict", content=body), 400,
          "Request body is not valid JSON")
    check(await client.post("/v2/models/bag/infer", content=body), 400,
          "Request body is not valid JSON")
    if not body:
        check(await client.post("/v1/models:load", content=body,
                                headers={"content-type": "application/json"}), 422,
              "Field required")
        return
    if b"NaN" in body or b"Infinity" in body or b"1e999" in body:
        return  # Python's json module (FastAPI's) reads these: the admin body is then a 422
    check(await client.post("/v1/models:load", content=body,
                            headers={"content-type": "application/json"}), 400,
          "Request body is not valid JSON")


async def test_json_that_is_not_an_object_is_422_on_v1(client: httpx.AsyncClient) -> None:
    for body in ([1, 2], "text", 5, False):
        check(await client.post("/v1/models/bag:predict", json=body), 422,
              "Request body must be a JSON object")
        check(await client.post("/v2/models/bag/infer", json=body), 400,
              "Request body must be a JSON object")


# -- tensor payloads that parse but are wrong --------------------------------------------------

BAD_PAYLOADS: dict[str, tuple[str, dict[str, Any], str]] = {
    # id: (model, v1 inputs, what the message says)
    "invalid base64 characters": ("bag", {"tokens": {"b64": "!!!!", "shape": [1, 1]},
                                          "mask": {"data": [[True]]}}, "invalid base64"),
    "base64 missing padding": ("bag", {"tokens": {"b64": "AAA", "shape": [1, 1]},
                                       "mask": {"data": [[True]]}}, "invalid base64"),
    "base64 of the wrong length": ("bag", {"tokens": {"b64": "AAAA", "shape": [1, 1]},
                                           "mask": {"data": [[True]]}}, "needs 8 bytes, got 3"),
    "base64 as a number": ("bag", {"tokens": {"base64": 12, "shape": [1, 1]},
                                   "mask": {"data": [[True]]}}, "must be a base64 string"),
    "b64 with an impossible empty shape [0, 2**62]": (
        "mlp", {"x": {"b64": "", "shape": [0, 2**62]}}, "is not possible"),
    "a shape past 64 bits (a float to JSON)": (
        "mlp", {"x": {"b64": "", "shape": [0, 2**64]}}, "'shape' must be a list"),
    "300 for uint8": ("ints", {"u8": {"data": [[1, 300]]}}, "values out of range for uint8"),
    "-1 for uint8": ("ints", {"u8": {"data": [[-1]]}}, "values out of range for uint8"),
    "2**63 for int64": ("bag", {"tokens": {"data": [[2**63]]}, "mask": {"data": [[True]]}},
                        "values out of range for int64"),
    "2**70 for int64": ("bag", {"tokens": {"data": [[2**70]]}, "mask": {"data": [[True]]}},
                        "expected dtype int64, got float data"),
    "a float for int64": ("bag", {"tokens": {"data": [[1.5]]}, "mask": {"data": [[True]]}},
                          "expected dtype int64, got float data"),
    "strings for float32": ("mlp", {"x": {"data": [["a"] * 256]}}, "expected dtype float32"),
    "numbers for bool": ("bag", {"tokens": {"data": [[1]]}, "mask": {"data": [[1]]}},
                         "expected dtype bool"),
    "null elements": ("mlp", {"x": {"data": [[None] * 256]}}, "expected dtype float32"),
    "objects as elements": ("mlp", {"x": {"data": [[{}] * 256]}}, "expected dtype float32"),
    "data as a string": ("mlp", {"x": {"data": "1,2,3"}}, "expected dtype float32"),
    "data as a number": ("mlp", {"x": {"data": 5}}, "expected shape"),
    "data as an object": ("mlp", {"x": {"data": {"a": 1}}}, "expected dtype float32"),
    "ragged rows": ("bag", {"tokens": {"data": [[1, 2], [3]]}, "mask": {"data": [[True]]}},
                    "not a rectangular array"),
    "a row beside a number": ("bag", {"tokens": {"data": [[1, 2], 3]},
                                      "mask": {"data": [[True]]}}, "not a rectangular array"),
    "data nested 100 levels": ("mlp", {"x": {"data": json.loads("[" * 100 + "]" * 100)}},
                               "not a rectangular array"),
    "shape of booleans": ("mlp", {"x": {"data": [0.5] * 256, "shape": [True, 256]}},
                          "'shape' must be a list of non-negative integers"),
    "negative shape": ("mlp", {"x": {"data": [0.5] * 256, "shape": [-1, 256]}},
                       "'shape' must be a list of non-negative integers"),
    "shape of strings": ("mlp", {"x": {"data": [0.5] * 256, "shape": ["1", "256"]}},
                         "'shape' must be a list of non-negative integers"),
    "payload not an object": ("mlp", {"x": [0.5] * 256}, "expected an object"),
    "payload with neither data nor b64": ("mlp", {"x": {"shape": [1, 256]}},
                                          "give exactly one of"),
    "a bool byte of 2 in b64": ("bag", {"tokens": {"data": [[1, 2]]}, "mask": {
        "b64": base64.b64encode(b"\x01\x02").decode(), "shape": [1, 2]}},
        "Input 'mask': bool bytes must be 0 or 1"),
}


@pytest.mark.parametrize(("model", "inputs", "says"), BAD_PAYLOADS.values(),
                         ids=BAD_PAYLOADS.keys())
async def test_a_bad_v1_payload_is_422_naming_the_problem(
        client: httpx.AsyncClient, model: str, inputs: dict[str, Any], says: str) -> None:
    check(await client.post(f"/v1/models/{model}:predict", json={"inputs": inputs}), 422, says)


V2_BAD: dict[str, tuple[str, dict[str, Any], str]] = {
    "300 for UINT8": ("ints", {"name": "u8", "datatype": "UINT8", "shape": [1, 2],
                               "data": [1, 300]}, "values out of range for uint8"),
    "2**70 for INT64": ("bag", {**V2_TOKENS, "data": [2**70, 1]}, "got float data"),
    "strings for INT64": ("bag", {**V2_TOKENS, "data": ["1", "2"]}, "expected dtype int64"),
    "ragged data": ("bag", {**V2_TOKENS, "data": [[1, 2], [3]]}, "not a rectangular array"),
    "data of the wrong size": ("bag", {**V2_TOKENS, "data": [1, 2, 3]}, "does not match"),
    "name as a number": ("bag", {**V2_TOKENS, "name": 7}, "Missing required input(s): tokens"),
    "name as a list": ("bag", {**V2_TOKENS, "name": ["tokens"]},
                       "Missing required input(s): tokens"),
    "datatype as a list": ("bag", {**V2_TOKENS, "datatype": ["INT64"]},
                           "unsupported datatype"),
    "shape of strings": ("bag", {**V2_TOKENS, "shape": ["1", "2"]}, "'shape' must be a list"),
    "shape of booleans": ("bag", {**V2_TOKENS, "shape": [True, 2]}, "'shape' must be a list"),
    "parameters as a list": ("bag", {**V2_TOKENS, "parameters": [1]},
                             "'parameters' of input 'tokens' must be an object"),
    "binary_data_size negative": ("bag", {**V2_TOKENS, "parameters": {"binary_data_size": -8}},
                                  "binary_data_size is -8"),
    "binary_data_size a boolean": ("bag", {**V2_TOKENS, "parameters": {"binary_data_size": True}},
                                   "binary_data_size must be an integer"),
}


@pytest.mark.parametrize(("model", "tensor", "says"), V2_BAD.values(), ids=V2_BAD.keys())
async def test_a_bad_v2_tensor_is_400_naming_the_problem(
        client: httpx.AsyncClient, model: str, tensor: dict[str, Any], says: str) -> None:
    inputs = [tensor, V2_MASK] if model == "bag" else [tensor]
    check(await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs}), 400, says)


async def test_v2_inputs_that_are_not_named_tensors_are_400(client: httpx.AsyncClient) -> None:
    """Tried: every required input plus one named by a list, by an object, or not named; and
    ``inputs`` as a list of numbers."""
    for name in (["tokens"], {"a": 1}, None):
        extra = {**V2_TOKENS, "name": name}
        check(await client.post("/v2/models/bag/infer", json={
            "inputs": [V2_TOKENS, V2_MASK, extra]}), 400, "Every input needs a 'name'")
    check(await client.post("/v2/models/bag/infer", json={"inputs": [1, 2]}), 400,
          "'inputs' must be a list of tensors")


@pytest.mark.parametrize("field", ["inputs", "outputs", "codec", "version", "timeout_ms"])
async def test_v1_envelope_fields_of_the_wrong_type_are_422(client: httpx.AsyncClient,
                                                            field: str) -> None:
    """Tried: each envelope field as a list of numbers, an object and a nested list."""
    for value in ([1, 2], {"a": 1}, [[["x"]]]):
        body = {**GOOD_BAG, field: value}
        response = await client.post("/v1/models/bag:predict", json=body)
        assert response.status_code == 422, (field, value, response.text)


@pytest.mark.parametrize("field", ["inputs", "outputs", "parameters", "id"])
async def test_v2_envelope_fields_of_the_wrong_type_are_400(client: httpx.AsyncClient,
                                                            field: str) -> None:
    """Tried: each field as a number, a list of numbers and an object nested 300 levels (deeper
    than orjson writes: an ``id`` echoed back as given would break the response)."""
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    for value in (5, [1, 2], deep):
        if field == "parameters" and isinstance(value, dict):
            continue  # an object is what parameters are; unknown ones are ignored
        body = {"inputs": [V2_TOKENS, V2_MASK], field: value}
        response = await client.post("/v2/models/bag/infer", json=body)
        assert response.status_code == 400, (field, response.text)


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    """Tried: unknown top-level fields and unknown keys in a tensor payload / a v2 tensor."""
    v1 = {**GOOD_BAG, "surprise": {"deep": [1, 2]}, "__proto__": 1}
    v1["inputs"] = {"tokens": {"data": [[1, 2]], "colour": "red"}, "mask": {"data": [[True,
                                                                                     True]]}}
    assert (await client.post("/v1/models/bag:predict", json=v1)).status_code == 200
    v2 = {"inputs": [{**V2_TOKENS, "colour": "red"}, V2_MASK], "surprise": 1}
    assert (await client.post("/v2/models/bag/infer", json=v2)).status_code == 200
    # Admin bodies are strict.
    check(await client.post("/v1/models:load", json={"name": "bag", "surprise": 1}), 422,
          "Extra inputs are not permitted")


# -- names in paths and load requests -------------------------------------------------------

BAD_NAMES = ["a$b", "...", "%2e%2e", "a%20b", "mod%C3%A8le", "x" * 65, "-leading", "a.b"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_model_name_outside_the_pattern_is_422(client: httpx.AsyncClient,
                                                       name: str) -> None:
    """Tried: each name in every route that takes one (predict, metadata, v2 repository)."""
    check(await client.post(f"/v1/models/{name}:predict", json=GOOD_BAG), 422, "path.name")
    check(await client.post(f"/v1/models/{name}/versions/1:predict", json=GOOD_BAG), 422,
          "path.name")
    check(await client.get(f"/v1/models/{name}"), 422, "path.name")
    check(await client.get(f"/v1/models/{name}/active"), 422, "path.name")
    check(await client.post(f"/v2/models/{name}/infer", json={}), 400, "path.name")
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/ready", f"/v2/models/{name}/config",
                 f"/v2/models/{name}/versions/1"):
        check(await client.get(path), 400, "path.name")
    for action in ("load", "unload"):
        check(await client.post(f"/v2/repository/models/{name}/{action}"), 400, "path.name")


@pytest.mark.parametrize("name", ["../etc", "/etc/passwd", "%2e%2e", "..%2fetc", "mlp/../bag",
                                  "..\\bag", "bag\x00", ""])
async def test_path_traversal_in_a_load_request_is_422(client: httpx.AsyncClient,
                                                       name: str) -> None:
    for route in ("/v1/models:load", "/v1/models:unload"):
        check(await client.post(route, json={"name": name}), 422, "name")
    check(await client.post("/v1/models:activate", json={"name": name, "version": 1}), 422,
          "name")


async def test_a_model_outside_the_repository_is_refused_and_never_read(
        start_server: Start, repo: Path, tmp_path: Path) -> None:
    """Tried: a model directory that is a symlink to a model outside the root, and a model whose
    artifact is ``../../outside.pt``; loading either is a 422 and nothing outside is read (the
    outside model's code would write a marker file when imported)."""
    outside = tmp_path / "outside"
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').close()\n" + INTS_CODE
    add_model(outside, "evil", INTS_MODEL.replace("name: ints", "name: evil"), code)
    (repo / "evil").symlink_to(outside / "evil", target_is_directory=True)
    (tmp_path / "outside.pt").write_bytes(b"not a model")
    escape = repo / "escape" / "1"
    escape.mkdir(parents=True)
    (escape / "model.yaml").write_text(textwrap.dedent("""\
        name: escape
        version: 1
        format: torchscript
        artifact: ../../../outside.pt
        signature:
          inputs: [{name: x, dtype: float32, shape: [batch]}]
          outputs: [{name: y, dtype: float32, shape: [batch]}]
        """))
    _, client = await start_server()
    for name in ("evil", "escape"):
        check(await client.post("/v1/models:load", json={"name": name}), 422,
              "outside the model repository")
        check(await client.post(f"/v2/repository/models/{name}/load"), 400,
              "outside the model repository")
        check(await client.post(f"/v1/models/{name}:predict", json={}), 422,
              "outside the model repository")
    listing = (await client.get("/v1/models")).json()
    assert not {"evil", "escape"} & {m["name"] for m in listing["models"]}
    assert sum("outside the repository root" in p for p in listing["repository_errors"]) == 2
    assert not marker.exists()


# -- request ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["a\r\nSet-Cookie: x=1", "a\nb", "a\x00b", "a\tb", "a b",
                                   "é", "x" * 129, ""])
async def test_a_request_id_with_control_characters_or_too_long_is_replaced(
        start_server: Start, caplog: pytest.LogCaptureFixture, given: str) -> None:
    """Tried: CR/LF (header injection), NUL, tab, space, non-ASCII, 129 characters, empty; on a
    predict (the fast path) and a FastAPI route. The response carries a made id instead, and the
    access log line too."""
    _, client = await start_server(access_log=True)
    with caplog.at_level(logging.INFO, logger="inferno.access"):
        header = [("x-request-id", given.encode())]
        for response in (await client.post("/v1/models/bag:predict", json=GOOD_BAG,
                                            headers=header),
                         await client.get("/health/live", headers=header)):
            assert response.status_code == 200
            made = response.headers["x-request-id"]
            assert made != given and re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made), made
            assert "set-cookie" not in response.headers
    ids = [r.request_id for r in caplog.records if r.name == "inferno.access"]  # type: ignore[attr-defined]
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", i) for i in ids)


async def test_a_request_id_of_128_visible_characters_is_kept(client: httpx.AsyncClient) -> None:
    given = "A-z0_9.~!" * 14 + "xx"
    assert len(given) == 128
    response = await client.post("/v1/models/bag:predict", json=GOOD_BAG,
                                 headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given


# -- v2 binary framing ------------------------------------------------------------------------

def binary_body(tokens: bytes, declared: int, shape: list[int] | None = None) -> bytes:
    header = json.dumps({"inputs": [
        {"name": "tokens", "datatype": "INT64", "shape": shape or [1, 2],
         "parameters": {"binary_data_size": declared}}, V2_MASK]}).encode()
    return header + tokens


@pytest.mark.parametrize(("value", "says"), [
    ("99999", "does not fit a body"), ("0", "does not fit a body"),
    ("-5", "must be a number of bytes"), ("abc", "must be a number of bytes"),
    ("", "must be a number of bytes"), ("1e3", "must be a number of bytes"),
    (" 12", "must be a number of bytes"), ("99999999999999999999999", "does not fit a body"),
])
async def test_a_bad_inference_header_content_length_is_400(client: httpx.AsyncClient,
                                                            value: str, says: str) -> None:
    body = binary_body(np.array([1, 2], "<i8").tobytes(), 16)
    check(await client.post("/v2/models/bag/infer", content=body,
                            headers={"inference-header-content-length": value}), 400, says)


async def test_a_non_ascii_digit_in_the_header_length_is_400(client: httpx.AsyncClient) -> None:
    """Tried: '²' (0xB2), a digit to str.isdigit that int() refuses."""
    response = await client.post("/v2/models/bag/infer", content=b"{}",
                                 headers=[(b"inference-header-content-length", b"\xb2")])
    check(response, 400, "must be a number of bytes")


@pytest.mark.parametrize(("data", "declared", "shape", "says"), [
    (b"\x01" * 8, 16, None, "binary_data_size is 16 with 8 bytes left"),
    (b"\x01" * 24, 16, None, "8 bytes of binary data are not claimed"),
    (b"\x01" * 16, 8, None, "needs 16 bytes; binary_data_size is 8"),
    (b"\x01" * 16, 24, None, "needs 16 bytes; binary_data_size is 24"),
    (b"", 0, [0, 2**62], "is not possible"),
])
async def test_binary_data_that_does_not_match_its_shape_is_400(
        client: httpx.AsyncClient, data: bytes, declared: int, shape: list[int] | None,
        says: str) -> None:
    """Tried: fewer bytes than declared, more bytes than claimed, a declared size that is not
    shape x itemsize (smaller, larger), and an empty tensor with an impossible dimension."""
    header_len = len(binary_body(b"", declared, shape))
    check(await client.post("/v2/models/bag/infer", content=binary_body(data, declared, shape),
                            headers={"inference-header-content-length": str(header_len)}),
          400, says)


async def test_a_binary_bool_byte_other_than_0_or_1_is_400(client: httpx.AsyncClient) -> None:
    """Tried: a BOOL input of the binary extension holding the byte 2 (torch would read it as
    true, numpy's comparisons as 2)."""
    mask = {"name": "mask", "datatype": "BOOL", "shape": [1, 2],
            "parameters": {"binary_data_size": 2}}
    header = json.dumps({"inputs": [V2_TOKENS, mask]}).encode()
    check(await client.post("/v2/models/bag/infer", content=header + b"\x01\x02",
                            headers={"inference-header-content-length": str(len(header))}),
          400, "Input 'mask': bool bytes must be 0 or 1")


# -- versions: one parser for paths and bodies ------------------------------------------------

BAD_VERSIONS = ["0", -3, "two", 0, True, "1.5", "²"]


@pytest.mark.parametrize("version", BAD_VERSIONS, ids=repr)
async def test_a_bad_version_in_a_body_is_422(client: httpx.AsyncClient, version: Any) -> None:
    """Tried: each version in a v1 predict body and in an admin body (a v1 predict with "0" was
    a 404, and an admin body took true for 1)."""
    says = "version: Input should be"
    check(await client.post("/v1/models/bag:predict", json={**GOOD_BAG, "version": version}),
          422, says)
    for route in ("/v1/models:load", "/v1/models:unload", "/v1/models:activate"):
        check(await client.post(route, json={"name": "bag", "version": version}), 422, says)


@pytest.mark.parametrize("version", BAD_VERSIONS, ids=repr)
async def test_a_bad_version_in_a_path_is_422_in_v1_and_400_in_v2(client: httpx.AsyncClient,
                                                                   version: Any) -> None:
    """Tried: each version (as JSON writes it) in every path that takes one."""
    text = version if isinstance(version, str) else json.dumps(version)
    says = "path.version: Input should be"
    check(await client.post(f"/v1/models/bag/versions/{text}:predict", json=GOOD_BAG), 422,
          says)
    check(await client.post(f"/v2/models/bag/versions/{text}/infer", json={
        "inputs": [V2_TOKENS, V2_MASK]}), 400, says)
    for path in ("", "/ready", "/config"):
        check(await client.get(f"/v2/models/bag/versions/{text}{path}"), 400, says)


# -- nothing from the wire is unpickled or evaluated ------------------------------------------

def test_no_request_data_is_unpickled_or_evaluated() -> None:
    """The serving code never calls pickle, marshal, eval/exec, unsafe YAML or torch.load: the
    wire is JSON and raw tensor bytes read with numpy.frombuffer. (torch.jit.load reads the
    artifacts of the repository, never request data; yaml.safe_load reads model.yaml.)"""
    forbidden = re.compile(r"\b(?:import pickle|pickle\.|cPickle|marshal\.loads|dill|"
                           r"(?<![.\w])eval\(|(?<![.\w])exec\(|torch\.load\(|yaml\.load\(|"
                           r"yaml\.unsafe_load|np\.load\(|numpy\.load\(|allow_pickle=True)")
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for package in ("common", "facade", "worker", "inferno")
            for path in sorted((ROOT / package).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if forbidden.search(line)]
    assert hits == []


def test_the_worker_side_decoder_refuses_the_same_payloads() -> None:
    """JSON queue messages go through the same decoder (common/wire/json_request.py): an
    impossible shape or a body nested past orjson's limit is an InvalidInput, which the worker
    answers as ``invalid_input`` and keeps serving (tests/contract/test_amqp_wire_contract.py)."""
    signature = Signature.model_validate({
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "n"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]})
    for body in (b'{"inputs": {"x": {"b64": "", "shape": [0, 18446744073709551616]}}}',
                 b'{"inputs": {"x": {"data": [[1, 2], [3]]}}}',
                 b'{"inputs": {"x": {"data": ' + b"[" * 5000 + b"]" * 5000 + b"}}}"):
        with pytest.raises(InvalidInput):
            decode_json_inputs(parse_json_object(body), signature)


async def test_the_worker_survives_a_storm_of_hostile_requests(client: httpx.AsyncClient
                                                               ) -> None:
    """Every case of this file at once, interleaved with good requests: all the good ones
    succeed."""
    import asyncio

    bad = [client.post(f"/v1/models/{m}:predict", json={"inputs": i})
           for m, i, _ in BAD_PAYLOADS.values()]
    good = [client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)}) for _ in range(20)]
    answers = await asyncio.gather(*bad, *good)
    assert all(a.status_code == 422 for a in answers[:len(bad)])
    assert all(a.status_code == 200 for a in answers[len(bad):])
