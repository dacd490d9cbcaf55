"""A model of format onnx through the v2 API and Triton's own client, embedded server.

The repository holds ``scorer`` (tests/onnx_models.py: a torch module exported to model.onnx in
the test's repository) with ``wait: fill`` batching up to 12 rows: eight concurrent infers of
12 rows in all run as one batch, which the statistics show, each caller getting its own rows.
``mismatched`` is the same file under a signature whose ``x`` is float64: loading it fails,
and the load's answer says why (v2 and v1), while the other models keep serving. A failed admin
load leaves the version undesired, so the repository index says ``unloaded`` afterwards, as
for any model. ``TestOnnx`` runs again
against a cluster in test_onnx_distributed.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferResult

from tests.onnx_models import SIGNATURE, scorer_inputs, scorer_outputs, write_scorer
from tests.v2.conftest import CORE_MODELS, Served, ServeEmbedded, tensor
from tests.v2.test_statistics import settled
from tests.v2.test_triton_client import X
from worker.onnx_runtime import INSTALL

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.asyncio

ROWS = (1, 2, 1, 3, 1, 2, 1, 1)
"""Rows of each concurrent infer: 12 in all, ``max_batch_size``."""
FILL = {"max_batch_size": sum(ROWS), "wait": "fill", "max_batch_latency_ms": 20_000}
"""The batch runs once full: the wait is long enough that a shorter batch means a failure."""
MISMATCH = ("input 'x': float64 in model.yaml, tensor(float) in model.onnx")


def write_onnx_models(repo: Path) -> None:
    write_scorer(repo, batching=FILL)
    mismatched = {**SIGNATURE, "inputs": [{**SIGNATURE["inputs"][0], "dtype": "float64"},
                                          SIGNATURE["inputs"][1]]}
    write_scorer(repo, "mismatched", signature=mismatched)


@pytest.fixture
async def onnx_server(repo: Path, serve_embedded: ServeEmbedded) -> Served:
    write_onnx_models(repo)
    return await serve_embedded(preload=[*CORE_MODELS, "scorer"])


def scorer_infer(client: InferenceServerClient, rows: int, seed: int) -> InferResult:
    inputs = scorer_inputs(rows, seed)
    return client.infer("scorer", [tensor(n, a) for n, a in inputs.items()])


class TestOnnx:
    async def test_concurrent_infers_share_one_batch_and_keep_their_rows(
            self, onnx_server: Served) -> None:
        def infer_all(client: InferenceServerClient) -> list[InferResult]:
            pending = [client.async_infer("scorer", [tensor(n, a) for n, a
                                                     in scorer_inputs(rows, seed).items()])
                       for seed, rows in enumerate(ROWS)]
            return [request.get_result() for request in pending]

        results = await onnx_server.triton(infer_all, concurrency=len(ROWS))
        for seed, (rows, result) in enumerate(zip(ROWS, results, strict=True)):
            want = scorer_outputs(rows, seed)
            np.testing.assert_allclose(result.as_numpy("scores"), want["scores"],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
        stat = await settled(onnx_server, "scorer", "1", len(ROWS))
        assert stat["inference_count"] == sum(ROWS)
        assert stat["execution_count"] == 1
        assert [b["batch_size"] for b in stat["batch_stats"]] == [sum(ROWS)]

    async def test_metadata_and_configuration_name_onnxruntime(self, onnx_server: Served) -> None:
        metadata = await onnx_server.triton(lambda c: c.get_model_metadata("scorer"))
        assert metadata["platform"] == "onnxruntime_onnx"
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
            ("x", "FP32", [-1, 4]), ("shift", "INT64", [-1, 1])]
        config = await onnx_server.triton(lambda c: c.get_model_config("scorer"))
        assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
        assert config["max_batch_size"] == sum(ROWS)

    async def test_a_graph_unlike_its_signature_fails_its_load_and_the_rest_serve(
            self, onnx_server: Served) -> None:
        status, message = await onnx_server.refused(lambda c: c.load_model("mismatched"))
        assert status == 500 and MISMATCH in message, (status, message)
        response = await onnx_server.http.post("/v1/models:load", json={"name": "mismatched"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "model_failed" and MISMATCH in error["message"], error
        mlp = await onnx_server.triton(lambda c: c.infer("mlp", [tensor("x", X)]))
        assert mlp.as_numpy("probs").shape == (3, 10)
        scored = await onnx_server.triton(lambda c: [scorer_infer(c, 12, 3)])
        np.testing.assert_array_equal(scored[0].as_numpy("label"),
                                      scorer_outputs(12, 3)["label"])


async def test_without_onnxruntime_the_model_names_the_extra_and_the_rest_serve(
        repo: Path, serve_embedded: ServeEmbedded, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sys.modules['onnxruntime'] = None``: its import raises ImportError, as where the extra
    is not installed (the worker runs in this process)."""
    write_onnx_models(repo)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    server = await serve_embedded(preload=["mlp"])
    status, message = await server.refused(lambda c: c.load_model("scorer"))
    assert status == 500 and "MissingExtra: format onnx needs the onnx extra" in message
    assert INSTALL in message
    mlp = await server.triton(lambda c: c.infer("mlp", [tensor("x", X)]))
    assert mlp.as_numpy("label").shape == (3,)
