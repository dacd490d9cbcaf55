"""Content codings over HTTP (issue 23, item 3): tritonclient's request and response compression
against an embedded server on a real port, and what is refused.

Tried: gzip and deflate bodies (JSON and the binary extension, whose header length counts the
inflated body), answers compressed when asked (and not below INFERNO_COMPRESS_MIN_BYTES), a gzip
bomb past the body limit (413), a truncated gzip body (400 on v2, 400 on v1), an unknown coding
(415), and a compressed admin body read by FastAPI's routes.
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import orjson
import pytest

from tests.v2.conftest import ServeEmbedded
from tests.v2.test_triton_client import assert_mlp, mlp_x

pytestmark = pytest.mark.asyncio

V2_JSON = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                       "data": [0.5] * 256}]}
V1_JSON = {"inputs": {"x": {"data": [[0.5] * 256]}}}
MAX_BODY = 1 << 20


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_tritonclient_compressed_both_ways(serve_embedded: ServeEmbedded, coding: str,
                                                 binary: bool) -> None:
    server = await serve_embedded(preload=["mlp"], compress_min_bytes=1)
    result = await server.triton(lambda c: c.infer(
        "mlp", mlp_x(binary), request_compression_algorithm=coding,
        response_compression_algorithm=coding))
    assert_mlp(result, 2, ["probs", "label", "logits"])


async def test_an_answer_is_compressed_when_asked_and_large_enough(
        serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"], compress_min_bytes=200)
    body = gzip.compress(orjson.dumps(V2_JSON))
    asked = await server.http.post("/v2/models/mlp/infer", content=body, headers={
        "content-encoding": "gzip", "accept-encoding": "gzip"})
    assert asked.status_code == 200, asked.text
    assert asked.headers["content-encoding"] == "gzip"  # httpx inflated it for .json()
    assert [o["name"] for o in asked.json()["outputs"]] == ["probs", "label", "logits"]
    refused = await server.http.post("/v2/models/mlp/infer", content=body, headers={
        "content-encoding": "gzip", "accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    assert refused.json() == asked.json()


async def test_a_small_answer_goes_uncompressed_by_default(
        serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"])  # INFERNO_COMPRESS_MIN_BYTES: 64 KiB
    answer = await server.http.post("/v1/models/mlp:predict", json=V1_JSON,
                                    headers={"accept-encoding": "gzip"})
    assert answer.status_code == 200 and "content-encoding" not in answer.headers


@pytest.mark.parametrize(("path", "body"), [("/v1/models/mlp:predict", V1_JSON),
                                            ("/v2/models/mlp/infer", V2_JSON)])
async def test_a_gzip_bomb_is_413_and_a_cut_stream_400(serve_embedded: ServeEmbedded, path: str,
                                                       body: dict[str, object]) -> None:
    server = await serve_embedded(preload=["mlp"], max_body_bytes=MAX_BODY)
    bomb = gzip.compress(b" " * (4 * MAX_BODY))  # valid JSON whitespace, 4 KiB compressed
    assert len(bomb) < MAX_BODY
    answer = await server.http.post(path, content=bomb, headers={"content-encoding": "gzip"})
    assert answer.status_code == 413, answer.text
    assert f"inflates past the limit of {MAX_BODY} bytes" in answer.text
    cut = gzip.compress(orjson.dumps(body))[:-12]
    answer = await server.http.post(path, content=cut, headers={"content-encoding": "gzip"})
    assert answer.status_code == 400 and "cut short" in answer.text, answer.text
    garbage = await server.http.post(path, content=b"not gzip at all",
                                     headers={"content-encoding": "deflate"})
    assert garbage.status_code == 400 and "cannot be decoded" in garbage.text


@pytest.mark.parametrize("path", ["/v1/models/mlp:predict", "/v2/models/mlp/infer",
                                  "/v1/models:load"])
async def test_an_unknown_coding_is_415(serve_embedded: ServeEmbedded, path: str) -> None:
    server = await serve_embedded(preload=["mlp"])
    answer = await server.http.post(path, content=b"{}", headers={"content-encoding": "br"})
    assert answer.status_code == 415, answer.text
    assert "Content-Encoding 'br' is not supported" in answer.text


async def test_an_admin_body_is_read_inflated(serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"])
    body = zlib.compress(orjson.dumps({"name": "mlp", "version": 1}))
    loaded = await server.http.post("/v1/models:load", content=body, headers={
        "content-encoding": "deflate", "content-type": "application/json"})
    assert loaded.status_code == 200, loaded.text
    answer = await server.http.post("/v1/models/mlp/versions/1:predict", json=V1_JSON)
    assert answer.status_code == 200 and np.asarray(
        answer.json()["outputs"]["probs"]["data"]).shape == (1, 10)


async def test_the_other_routes_answer_gzip_when_asked_and_large_enough(
        serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"], compress_min_bytes=500)
    stats = await server.triton(lambda c: c.get_inference_statistics("mlp"))  # a few KiB
    for path in ("/v2/models/stats", "/openapi.json", "/metrics"):
        asked = await server.http.get(path, headers={"accept-encoding": "gzip"})
        assert asked.status_code == 200 and asked.headers["content-encoding"] == "gzip", path
        plain = await server.http.get(path, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers, path
    assert (await server.http.get("/v2/models/mlp/stats", headers={
        "accept-encoding": "gzip"})).json() == stats
    small = await server.http.get("/health/live", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers
