"""A repository load with a configuration override (Triton's ``load_model(..., config=...)``)
through Triton's own HTTP client, embedded server: the version reloads with it, its
configuration and the admission of requests follow, a load without one restores model.yaml's,
and a malformed or unsupported load is a 400 naming what.

test_load_config_distributed.py does it again across a facade and a worker process's state.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest

from tests.v2.conftest import Served, ServeEmbedded, tensor

pytestmark = pytest.mark.asyncio

FOUR_ROWS = {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 2000}}


def rows(count: int) -> list[Any]:
    return [tensor("x", np.full((count, 256), 0.5, np.float32))]


async def mlp_config(server: Served) -> dict[str, Any]:
    config: dict[str, Any] = await server.triton(lambda c: c.get_model_config("mlp"))
    return config


async def test_a_load_with_a_config_reloads_the_version_with_it(server: Served) -> None:
    repository = await mlp_config(server)
    assert (repository["max_batch_size"], repository["dynamic_batching"]) == (
        64, {"max_queue_delay_microseconds": 5000})

    # Requests go on while the version reloads: none is lost or refused.
    async def infer_one() -> Any:
        return await server.triton(lambda c: c.infer("mlp", rows(1)))

    during = [asyncio.create_task(infer_one()) for _ in range(8)]
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(FOUR_ROWS)))
    assert all(r.as_numpy("label").shape == (1,) for r in await asyncio.gather(*during))

    # The configuration, v1's metadata and the worker's heartbeat all say it.
    assert await mlp_config(server) == {**repository, "max_batch_size": 4,
                                        "dynamic_batching": {"max_queue_delay_microseconds": 2000}}
    v1 = (await server.http.get("/v1/models/mlp/active")).json()
    assert v1["batching"] == {"max_batch_size": 4, "max_batch_latency_ms": 2.0, "wait": "fill"}
    assert server.embedded is not None
    [beat] = await server.embedded.store.workers()
    assert json.loads(beat.overrides["mlp:2"]) == {"batching": {
        "max_batch_size": 4, "max_batch_latency_ms": 2.0, "wait": "fill"}}

    # Admission follows: 5 rows are too many now, 4 are served.
    status, message = await server.refused(lambda c: c.infer("mlp", rows(5)))
    assert (status, message) == (400, "Batch of 5 rows exceeds max_batch_size 4 of model 'mlp'")
    assert (await server.triton(lambda c: c.infer("mlp", rows(4)))).as_numpy("label").shape == (
        4,)

    # A load without a config reloads it as model.yaml says (Triton's rule).
    await server.triton(lambda c: c.load_model("mlp"))
    assert await mlp_config(server) == repository
    assert (await server.triton(lambda c: c.infer("mlp", rows(5)))).as_numpy("label").shape == (
        5,)
    [beat] = await server.embedded.store.workers()
    assert beat.overrides == {}


async def test_the_configuration_read_from_the_server_loads_unchanged(server: Served) -> None:
    shown = await mlp_config(server)
    await server.triton(lambda c: c.load_model("mlp", config=json.dumps(shown)))
    assert await mlp_config(server) == shown
    assert server.embedded is not None
    [beat] = await server.embedded.store.workers()
    assert beat.overrides == {}  # nothing differed from model.yaml: no override at all


BAD_CONFIGS = [
    ("{not json", "parameters.config is not valid JSON"),
    (json.dumps({"max_batch_size": 4, "sequence_batching": {}}),
     "parameters.config: unsupported field 'sequence_batching'"),
    (json.dumps({"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [128]}]}),
     "parameters.config.input[0].dims is [128], but input 'x' has [256]: a configuration "
     "cannot change the signature"),
    (json.dumps({"max_batch_size": 100_000}),
     "parameters.config.max_batch_size: 100000 is refused (model.yaml's "
     "batching.max_batch_size: Input should be less than or equal to 65536)"),
]


async def test_a_bad_load_is_a_400_naming_what_and_changes_nothing(server: Served) -> None:
    repository = await mlp_config(server)
    for config, expected in BAD_CONFIGS:
        status, message = await server.refused(
            lambda c, config=config: c.load_model("mlp", config=config))
        assert status == 400 and expected in message, (config, message)
    # tritonclient cannot send files (it puts bytes in its JSON body): the body it means to.
    model_file = base64.b64encode(b"import os\n").decode()
    for body, expected in [
        ({"parameters": {"config": json.dumps(FOUR_ROWS), "file:1/model.py": model_file}},
         "parameters.file:1/model.py: file overrides (model files in the load request) are "
         "refused: a model file is code; set INFERNO_ALLOW_MODEL_FILES=true to allow them"),
        ({"parameters": {"config": {"max_batch_size": 4}}},
         "parameters.config must be a string (Triton's model configuration as JSON), not dict"),
        ({"parameters": {"priority": "high"}}, "Unrecognized load parameter 'priority'"),
        ({"parameters": "config"}, "parameters: Input should be a valid dictionary"),
        ({"config": "{}"}, "config: Extra inputs are not permitted"),
    ]:
        answer = await server.http.post("/v2/repository/models/mlp/load", json=body)
        assert answer.status_code == 400 and expected in answer.json()["error"], answer.text
    answer = await server.http.post("/v2/repository/models/mlp/load", content=b"{nope")
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
    # A model the repository lacks is a 404, config or not.
    status, _ = await server.refused(lambda c: c.load_model("nope", config="{}"))
    assert status == 404
    assert await mlp_config(server) == repository


async def test_files_are_refused_even_where_allowed(serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=[], allow_model_files=True)
    model_file = base64.b64encode(b"import os\n").decode()
    answer = await server.http.post("/v2/repository/models/sum/load", json={
        "parameters": {"file:1/model.py": model_file}})
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "parameters.file:1/model.py: file overrides (model files in the load request) are not "
        "supported, even with INFERNO_ALLOW_MODEL_FILES=true: put the files in the model "
        "repository")
