"""A repository load with a configuration override over gRPC (``tritonclient.grpc``
``load_model(..., config=...)``, ``RepositoryModelLoad``'s ``parameters``), embedded server: the
same override as over REST (tests/v2/test_load_config.py), its refusals ``INVALID_ARGUMENT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.grpc.conftest import GrpcServed, ServeGrpc, tensor
from tests.integration.conftest import FAKES

pytestmark = pytest.mark.asyncio

FOUR_ROWS = {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 2000}}


def rows(count: int) -> list[Any]:
    return [tensor("x", np.full((count, 256), 0.5, np.float32))]


async def mlp_config(server: GrpcServed) -> dict[str, Any]:
    """The mlp's ModelConfig, as protobuf's JSON (64-bit integers as strings)."""
    answer = await server.triton(lambda c: c.get_model_config("mlp", as_json=True))
    config: dict[str, Any] = answer["config"]
    return config


@pytest.fixture
async def server(serve_grpc: ServeGrpc) -> GrpcServed:
    served: GrpcServed = await serve_grpc(preload=["mlp"])
    return served


async def test_a_load_with_a_config_reloads_the_version_with_it(server: GrpcServed) -> None:
    repository = await mlp_config(server)
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(FOUR_ROWS)))
    assert await mlp_config(server) == {
        **repository, "max_batch_size": 4,
        "dynamic_batching": {"max_queue_delay_microseconds": "2000"}}
    assert await server.refused(lambda c: c.infer("mlp", rows(5))) == (
        "StatusCode.INVALID_ARGUMENT", "Batch of 5 rows exceeds max_batch_size 4 of model 'mlp'")
    assert (await server.triton(lambda c: c.infer("mlp", rows(4)))).as_numpy("label").shape == (
        4,)
    # The REST API sees the same override: one state, whatever the transport.
    assert (await server.http.get("/v2/models/mlp/config")).json()["max_batch_size"] == 4
    # The configuration as gRPC shows it (its integers strings) loads as it is: here, back to
    # model.yaml's values, which is what a load without a config does too.
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(repository)))
    assert await mlp_config(server) == repository
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(FOUR_ROWS)))
    await server.triton(lambda c: c.load_model("mlp"))
    assert await mlp_config(server) == repository
    [beat] = await server.embedded.store.workers()
    assert beat.overrides == {}


@pytest.mark.parametrize(("load", "expected"), [
    ({"config": "{not json"}, "parameters.config is not valid JSON"),
    ({"config": json.dumps({"sequence_batching": {}})},
     "parameters.config: unsupported field 'sequence_batching'"),
    ({"config": json.dumps({"output": [{"name": "probs"}]})},
     "parameters.config.output names probs, but the model's outputs are probs, label, logits: "
     "a configuration cannot change the signature"),
    ({"config": json.dumps(FOUR_ROWS), "files": {"file:1/model.pt": b"\x80\x02"}},
     "parameters.file:1/model.pt: file overrides (model files in the load request) are "
     "refused: a model file is code; set INFERNO_ALLOW_MODEL_FILES=true to allow them"),
], ids=["json", "unsupported", "signature", "file"])
async def test_a_bad_load_is_invalid_argument_naming_what(
        server: GrpcServed, load: dict[str, Any], expected: str) -> None:
    repository = await mlp_config(server)
    status, message = await server.refused(lambda c: c.load_model("mlp", **load))
    assert status == "StatusCode.INVALID_ARGUMENT" and expected in message, message
    assert await mlp_config(server) == repository


async def test_model_files_load_as_a_new_version_where_allowed(
        serve_grpc: ServeGrpc, repo: Path) -> None:
    served: GrpcServed = await serve_grpc(preload=[], allow_model_files=True)
    source = FAKES / "sum" / "1"
    files = {"file:2/model.yaml": (source / "model.yaml").read_bytes().replace(
                 b"version: 1\n", b"version: 2\n"),
             "file:2/model.py": (source / "model.py").read_bytes()}
    await served.triton(lambda c: c.load_model("sum", files=files))
    assert (repo / "sum" / "2" / "model.py").read_bytes() == files["file:2/model.py"]
    result = await served.triton(lambda c: c.infer(
        "sum", [tensor("x", np.ones((1, 4), np.float32))], model_version="2"))
    assert result.as_numpy("total").tolist() == [4.0]
    assert await served.refused(lambda c: c.load_model("sum", files={
        "file:3/../../x": b"name: sum\n"})) == (
        "StatusCode.INVALID_ARGUMENT", "parameters.file:3/../../x: a file's path is relative, "
        "without '..', '.', empty components or backslashes")
    assert not (repo / "x").exists() and sorted(p.name for p in (repo / "sum").iterdir()) == [
        "1", "2"]
