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
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.conftest import FAKES
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


def sum_files(version: int, yaml_version: int | None = None) -> dict[str, str]:
    """The files of the sample ``sum`` model as ``version``, base64 (what REST's load sends)."""
    source = FAKES / "sum" / "1"
    text = (source / "model.yaml").read_text().replace(
        "version: 1\n", f"version: {yaml_version or version}\n")
    return {f"file:{version}/model.yaml": base64.b64encode(text.encode()).decode(),
            f"file:{version}/model.py":
                base64.b64encode((source / "model.py").read_bytes()).decode()}


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


async def test_model_files_load_as_a_new_version_where_allowed(
        serve_embedded: ServeEmbedded, repo: Path) -> None:
    server = await serve_embedded(preload=[], allow_model_files=True)
    load = "/v2/repository/models/sum/load"
    answer = await server.http.post(load, json={"parameters": {
        **sum_files(2), "config": json.dumps({"max_batch_size": 4})}})
    assert answer.status_code == 200, answer.text
    assert files_under(repo / "sum") == ["1", "1/model.py", "1/model.yaml",
                                          "2", "2/model.py", "2/model.yaml"]
    result = await server.triton(lambda c: c.infer(
        "sum", [tensor("x", np.ones((2, 3), np.float32))], model_version="2"))
    assert result.as_numpy("total").tolist() == [3.0, 3.0]
    config = (await server.http.get("/v2/models/sum/versions/2/config")).json()
    assert config["max_batch_size"] == 4

    # A version is never overwritten; bad keys and a model.yaml the repository refuses are 400s
    # naming what, and leave nothing behind.
    before = files_under(repo)
    yaml_3 = sum_files(3)["file:3/model.yaml"]
    for parameters, expected in [
        (sum_files(2), "parameters.file:2/model.yaml: model 'sum' already has version 2"),
        ({"file:../x": yaml_3}, "parameters.file:../x: a file's path is relative"),
        ({"file:/abs": yaml_3}, "parameters.file:/abs: a file's path is relative"),
        ({"file:3/../../x": yaml_3}, "parameters.file:3/../../x: a file's path is relative"),
        ({"file:3\\model.yaml": yaml_3}, "parameters.file:3\\model.yaml: a file's path is"),
        ({"file:3//model.yaml": yaml_3}, "parameters.file:3//model.yaml: a file's path is"),
        ({"file:0/model.yaml": yaml_3}, "parameters.file:0/model.yaml: a file's path starts "
                                        "with its version"),
        ({"file:model.yaml": yaml_3}, "parameters.file:model.yaml: a file's path starts"),
        ({**sum_files(3), "file:4/extra.txt": yaml_3},
         "parameters.file:4/extra.txt: every file of a load belongs to one new version, here 3 "
         "and 4"),
        ({"file:3/model.py": yaml_3}, "parameters.file:3/model.yaml is missing"),
        ({"file:3/model.yaml": "not base64!"}, "parameters.file:3/model.yaml is not valid base64"),
        ({"file:3/model.yaml": 3}, "parameters.file:3/model.yaml must be the file's bytes in "
                                   "base64, not int"),
        (sum_files(3, yaml_version=5),
         "sum/3/model.yaml (field 'version'): model.yaml says sum/5 but lives in sum/3"),
    ]:
        answer = await server.http.post(load, json={"parameters": parameters})
        assert answer.status_code == 400 and expected in answer.json()["error"], answer.text
        assert files_under(repo) == before
    # A model the repository lacks is a 404, files or not.
    answer = await server.http.post("/v2/repository/models/nope/load",
                                    json={"parameters": sum_files(1)})
    assert answer.status_code == 404
