"""String tensors end to end, embedded server: the ``strings`` test model (text -> upper, length)
through v1 JSON, v2 JSON and binary BYTES, and Triton's own client on a live port."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from inferno.embedded import Embedded
from tests.integration.conftest import Start, error_of
from tests.v2.conftest import Served, ServeEmbedded, serve, serve_embedded  # noqa: F401 - fixtures

pytestmark = pytest.mark.asyncio

ROWS = ["héllo wörld ✓", "", "abc", "日本語", "straße", "ǆ emoji 🙂"]
HEADER = "Inference-Header-Content-Length"


def expected(rows: list[str]) -> tuple[list[str], list[int]]:
    return [s.upper() for s in rows], [len(s) for s in rows]


def prefixed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


@pytest.fixture
async def embedded(start_server: Start) -> tuple[Embedded, httpx.AsyncClient]:
    return await start_server(preload=["strings"])  # type: ignore[no-any-return]


@pytest.fixture
async def client(embedded: tuple[Embedded, httpx.AsyncClient]) -> httpx.AsyncClient:
    return embedded[1]


async def predict(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/v1/models/strings:predict", json=body)


# --- v1 JSON ------------------------------------------------------------------------------------


async def test_v1_batch_round_trip_keeps_non_ascii(client: httpx.AsyncClient) -> None:
    response = await predict(client, {"inputs": {"text": {"data": ROWS}}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    upper, length = expected(ROWS)
    assert outputs["upper"] == {"dtype": "string", "shape": [len(ROWS)], "data": upper}
    assert outputs["length"] == {"dtype": "int64", "shape": [len(ROWS)], "data": length}
    assert outputs["upper"]["data"][0] == "HÉLLO WÖRLD ✓"
    # The raw body is UTF-8 text, not \u escapes only a JSON parser would undo.
    assert "HÉLLO WÖRLD ✓".encode() in response.content


async def test_v1_one_row_and_selected_output(client: httpx.AsyncClient) -> None:
    response = await predict(client, {"inputs": {"text": {"data": ["ok"]}},
                                      "outputs": ["length"]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"length": {"dtype": "int64", "shape": [1],
                                                     "data": [2]}}


async def test_v1_concurrent_requests_are_batched_and_keep_their_rows(
        embedded: tuple[Embedded, httpx.AsyncClient]) -> None:
    server, client = embedded
    count = 16

    def rows(i: int) -> list[str]:
        return [f"ré{i}-{j}-✓" for j in range(1 + i % 3)]

    responses = await asyncio.gather(*(
        predict(client, {"inputs": {"text": {"data": rows(i)}}}) for i in range(count)))
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        upper, length = expected(rows(i))
        assert outputs["upper"]["data"] == upper, i
        assert outputs["length"]["data"] == length, i
    batches = server.registry.get_sample_value("infer_batch_size_count", {"model": "strings"})
    assert batches is not None and batches < count, "no two requests shared a batch"


@pytest.mark.parametrize(("data", "message"), [
    (["a", 1, "b"], "Input 'text': element 1 is not a string (got the number 1)"),
    (["a", None], "Input 'text': element 1 is not a string (got null)"),
    (["ok", "a" * 65],
     "Input 'text': element 1 is 65 bytes long; the limit is 64 (max_string_bytes)"),
    (["é" * 32, "✓" * 22],  # 32 x 2 = 64 bytes pass; 22 x 3 = 66 do not
     "Input 'text': element 1 is 66 bytes long; the limit is 64 (max_string_bytes)"),
    ([], "The batch dimension must be at least 1"),
], ids=["number", "null", "65-ascii-bytes", "66-utf8-bytes", "empty-batch"])
async def test_v1_invalid_strings_are_422_naming_the_element(
        client: httpx.AsyncClient, data: list[Any], message: str) -> None:
    response = await predict(client, {"inputs": {"text": {"data": data}}})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert message in error["message"], error


async def test_v1_64_bytes_is_the_limit_inclusive(client: httpx.AsyncClient) -> None:
    rows = ["a" * 64, "é" * 32, "✓" * 21 + "a"]
    response = await predict(client, {"inputs": {"text": {"data": rows}}})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["length"]["data"] == [64, 32, 22]


async def test_v1_over_limit_message_names_the_bound(client: httpx.AsyncClient) -> None:
    response = await predict(client, {"inputs": {"text": {"data": ["✓" * 22]}}})
    assert response.status_code == 422, response.text
    message = error_of(response)["message"]
    assert message == ("Input 'text': element 0 is 66 bytes long; the limit is 64 "
                       "(max_string_bytes)"), message


async def test_v1_b64_is_refused_for_strings(client: httpx.AsyncClient) -> None:
    response = await predict(client, {"inputs": {"text": {"b64": "YWJj", "shape": [1]}}})
    assert response.status_code == 422, response.text
    assert "text" in error_of(response)["message"]


# --- v2 over HTTP (httpx against the ASGI app) --------------------------------------------------


async def test_v2_json_bytes_in_and_out(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/strings/infer", json={"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [len(ROWS)], "data": ROWS}]})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    upper, length = expected(ROWS)
    assert outputs["upper"] == {"name": "upper", "datatype": "BYTES", "shape": [len(ROWS)],
                                "data": upper}
    assert outputs["length"] == {"name": "length", "datatype": "INT64", "shape": [len(ROWS)],
                                 "data": length}


async def test_v2_binary_bytes_in_and_out(client: httpx.AsyncClient) -> None:
    raw = prefixed(*(s.encode() for s in ROWS))
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(ROWS)],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "upper", "parameters": {"binary_data": True}},
                                   {"name": "length"}]}).encode()
    response = await client.post("/v2/models/strings/infer", content=head + raw,
                                 headers={HEADER: str(len(head))})
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    upper, lengths = expected(ROWS)
    want = prefixed(*(s.encode() for s in upper))
    outputs = {o["name"]: o for o in header["outputs"]}
    assert outputs["upper"]["parameters"] == {"binary_data_size": len(want)}
    assert outputs["length"]["data"] == lengths
    assert response.content[length:] == want


async def test_v2_json_bad_elements_name_them(client: httpx.AsyncClient) -> None:
    cases: list[tuple[list[Any], str]] = [(["a", 2], "element 1 is not a string"),
                                          (["a" * 65], "element 0 is 65 bytes long")]
    for data, message in cases:
        response = await client.post("/v2/models/strings/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(data)], "data": data}]})
        assert response.status_code == 400, response.text
        assert "text" in response.json()["error"] and message in response.json()["error"]


async def test_v2_binary_non_utf8_is_refused_naming_the_element(
        client: httpx.AsyncClient) -> None:
    raw = prefixed(b"fine", b"\xff\xfe", b"ok")
    head = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    response = await client.post("/v2/models/strings/infer", content=head + raw,
                                 headers={HEADER: str(len(head))})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'text'" in error and "element 1 is not valid UTF-8" in error, error


# --- Triton's own client against a live port ----------------------------------------------------


@pytest.fixture
async def live(serve_embedded: ServeEmbedded) -> Served:  # noqa: F811 - the fixture
    return await serve_embedded(preload=["strings"])


def triton_infer(rows: list[bytes], binary_in: bool, binary_out: bool
                 ) -> Any:
    def call(client: InferenceServerClient) -> tuple[Any, Any, Any]:
        text = InferInput("text", [len(rows)], "BYTES")
        text.set_data_from_numpy(np.array(rows, dtype=object), binary_data=binary_in)
        result = client.infer("strings", [text], outputs=[
            InferRequestedOutput("upper", binary_data=binary_out),
            InferRequestedOutput("length", binary_data=binary_out)])
        return result.as_numpy("upper"), result.as_numpy("length"), result.get_response()

    return call


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_triton_client_bytes_round_trip(live: Served, binary: bool) -> None:
    upper, length, response = await live.triton(triton_infer(
        [s.encode() for s in ROWS], binary, binary))
    want_upper, want_length = expected(ROWS)
    assert upper.dtype == object and upper.shape == (len(ROWS),)
    assert [v.decode() if isinstance(v, bytes) else v for v in upper] == want_upper
    # Binary output: bytes objects. JSON output: tritonclient makes an object array of the
    # JSON strings themselves (str), as it does against Triton.
    assert all(isinstance(v, bytes if binary else str) for v in upper), [type(v) for v in upper]
    assert length.dtype == np.int64 and length.tolist() == want_length
    datatypes = {o["name"]: o["datatype"] for o in response["outputs"]}
    assert datatypes == {"upper": "BYTES", "length": "INT64"}


async def test_triton_client_mixed_binary_in_json_out(live: Served) -> None:
    upper, length, _ = await live.triton(triton_infer([b"mixed \xc3\xa9"], True, False))
    assert [v.decode() if isinstance(v, bytes) else v for v in upper] == ["MIXED É"]
    assert length.tolist() == [7]


async def test_triton_client_metadata_says_bytes(live: Served) -> None:
    metadata = await live.triton(lambda c: c.get_model_metadata("strings"))
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "upper": "BYTES", "length": "INT64"}


async def test_triton_client_non_utf8_is_refused_naming_the_element(live: Served) -> None:
    status, message = await live.refused(triton_infer([b"ok", b"bad \xff"], True, True))
    assert status == 400, message
    assert "'text'" in message and "element 1 is not valid UTF-8" in message, message


async def test_triton_client_over_limit_is_refused(live: Served) -> None:
    status, message = await live.refused(triton_infer(["✓".encode() * 22], True, True))
    assert status == 400, message
    assert "Input 'text': element 0 is 66 bytes long; the limit is 64" in message, message
