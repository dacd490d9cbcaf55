"""Listing, metadata, load/unload/activate (hot swap), health and metrics through HTTP."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from common.logging import JsonFormatter
from tests.integration.conftest import Start, error_of, x_rows

pytestmark = pytest.mark.asyncio


async def test_list_models_shows_active_and_loaded_versions(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    models = {m["name"]: m for m in body["models"]}
    assert models["mlp"]["versions"] == [1, 2]
    assert models["mlp"]["active"] == 2
    assert models["mlp"]["loaded"] == [2]
    assert list(models["mlp"]["workers"]) == ["2"]
    assert models["bag"]["active"] == 1


async def test_malformed_model_yaml_is_reported_and_others_serve(start_server: Start,
                                                                 repo) -> None:  # type: ignore[no-untyped-def]
    bad = repo / "zzbad" / "1"
    bad.mkdir(parents=True)
    (bad / "model.yaml").write_text(
        "name: zzbad\nversion: 1\nformat: torchscript\nartifact: m.pt\n"
        "signature: {inputs: [{name: x, dtype: complex64, shape: [batch]}], "
        "outputs: [{name: y, dtype: float32, shape: [batch]}]}\n")
    _, client = await start_server()
    body = (await client.get("/v1/models")).json()
    assert "zzbad" not in {m["name"] for m in body["models"]}
    problem = next(p for p in body["repository_errors"] if "zzbad" in p)
    assert "zzbad/1/model.yaml" in problem and "signature.inputs.0.dtype" in problem
    ok = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
    assert ok.status_code == 200


async def test_model_metadata_has_full_signatures(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models/mlp")).json()
    v1, v2 = body["versions"]
    assert (v1["version"], v1["loaded"], v2["loaded"]) == (1, False, True)
    assert v2["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 256],
                             "optional": False}]
    assert [o["name"] for o in v1["outputs"]] == ["probs", "label"]
    assert [o["name"] for o in v2["outputs"]] == ["probs", "label", "logits"]
    assert v2["batching"]["max_batch_size"] == 64
    active = (await client.get("/v1/models/mlp/active")).json()
    assert (active["version"], active["loaded"]) == (2, True)
    assert (await client.get("/v1/models/nope")).status_code == 404


async def test_load_unload_and_activate(client: httpx.AsyncClient) -> None:
    loaded = await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"name": "mlp", "active": 2, "loaded": [1, 2]}
    pinned = await client.post("/v1/models/mlp/versions/1:predict", json={"inputs": x_rows(1)})
    assert set(pinned.json()["outputs"]) == {"probs", "label"}

    activated = await client.post("/v1/models:activate", json={"name": "mlp", "version": 1})
    assert activated.json() == {"name": "mlp", "active": 1, "loaded": [1, 2]}
    assert (await client.post("/v1/models/mlp:predict",
                              json={"inputs": x_rows(1)})).json()["version"] == 1

    unloaded = await client.post("/v1/models:unload", json={"name": "mlp", "version": 2})
    assert unloaded.json() == {"name": "mlp", "active": 1, "loaded": [1]}
    gone = await client.post("/v1/models/mlp/versions/2:predict", json={"inputs": x_rows(1)})
    assert gone.status_code == 404

    everything = await client.post("/v1/models:unload", json={"name": "mlp"})
    assert everything.json() == {"name": "mlp", "active": None, "loaded": []}
    not_loaded = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
    assert not_loaded.status_code == 404
    assert error_of(not_loaded)["code"] == "model_not_loaded"
    assert (await client.get("/v1/models/mlp/active")).status_code == 404


async def test_first_load_of_an_unloaded_model_makes_it_active(start_server: Start) -> None:
    _, client = await start_server(preload=[])
    assert (await client.get("/health/ready")).status_code == 200  # nothing to wait for
    response = await client.post("/v1/models:load", json={"name": "bag"})
    assert response.json() == {"name": "bag", "active": 1, "loaded": [1]}


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/models:load", {"name": "nope"}, 404, "model_not_found"),
    ("/v1/models:load", {"name": "mlp", "version": 7}, 404, "model_not_found"),
    ("/v1/models:activate", {"name": "mlp"}, 422, "invalid_input"),
    ("/v1/models:activate", {"name": "mlp", "version": 0}, 422, "invalid_input"),
    ("/v1/models:unload", {"name": "mlp", "version": 1}, 404, "model_not_loaded"),
    ("/v1/models:load", {"name": "../etc"}, 422, "invalid_input"),
    ("/v1/models:load", {"name": "mlp", "extra": 1}, 422, "invalid_input"),
])
async def test_admin_errors(client: httpx.AsyncClient, path: str, body: dict[str, object],
                            status: int, code: str) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


async def test_activate_under_load_loses_no_request(client: httpx.AsyncClient) -> None:
    """Hot swap: requests in flight while the active version changes all succeed."""
    versions: list[int] = []
    failures: list[str] = []
    swapped = asyncio.Event()
    flowing = asyncio.Event()

    async def caller() -> None:
        while not swapped.is_set() or len(versions) < 200:
            response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
            if response.status_code != 200:
                failures.append(response.text)
            else:
                versions.append(response.json()["version"])
            if len(versions) >= 50:
                flowing.set()
            if len(versions) > 2000:
                break

    callers = [asyncio.create_task(caller()) for _ in range(16)]
    await asyncio.wait_for(flowing.wait(), 30)
    activated = await client.post("/v1/models:activate", json={"name": "mlp", "version": 1})
    swapped.set()
    await asyncio.wait_for(asyncio.gather(*callers), 60)
    assert activated.status_code == 200
    assert failures == []
    assert versions[0] == 2 and versions[-1] == 1
    assert set(versions) == {1, 2}


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "live"}
    assert (await client.get("/health/ready")).json() == {"status": "ready"}


GATED_MODEL = """
import time
from pathlib import Path

def create(context):
    # Loading blocks until the test opens the gate: a model that takes long to load.
    gate = context.directory / "open"
    while not gate.exists():
        time.sleep(0.01)
    return lambda inputs: {"y": inputs["x"]}
"""


async def test_not_ready_until_preloaded_models_are_up(start_server: Start, repo) -> None:  # type: ignore[no-untyped-def]
    gated = repo / "gated" / "1"
    gated.mkdir(parents=True)
    (gated / "model.py").write_text(GATED_MODEL)
    (gated / "model.yaml").write_text(
        "name: gated\nversion: 1\nformat: python\nentrypoint: model:create\n"
        "signature: {inputs: [{name: x, dtype: float32, shape: [batch]}], "
        "outputs: [{name: y, dtype: float32, shape: [batch]}]}\n")
    embedded, client = await start_server(preload=["gated"], wait=False)
    assert (await client.get("/health/live")).status_code == 200
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "waiting_for": ["gated:1"]}
    unavailable = await client.post("/v1/models/gated:predict", json={"inputs": {"x": {
        "data": [1.0]}}})
    assert unavailable.status_code == 503 and error_of(unavailable)["code"] == "unavailable"
    (gated / "open").touch()
    assert await embedded.wait_ready(30)
    assert (await client.get("/health/ready")).status_code == 200


async def test_metrics_expose_the_families(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(2)})
    await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {"data": [1]}}})
    text = (await client.get("/metrics")).text
    for line in ('infer_requests_total{model="mlp",route="v1"} 2.0',
                 'infer_exceptions_total{code="invalid_input",model="mlp",route="v1"} 1.0',
                 'model_loaded{model="mlp",version="2"} 1.0',
                 'inferno_live_workers{model="mlp"} 1.0'):
        assert line in text
    for family in ("infer_latency_seconds_bucket", "infer_batch_size_bucket",
                   "infer_queue_wait_seconds_bucket", "infer_inference_seconds_bucket"):
        assert f'{family}{{le="' in text or f"{family}{{" in text


async def test_metrics_do_not_grow_a_label_per_unknown_model(client: httpx.AsyncClient) -> None:
    for name in ("a1", "a2", "a3"):
        await client.post(f"/v1/models/{name}:predict", json={"inputs": {}})
    text = (await client.get("/metrics")).text
    assert 'model="a1"' not in text
    assert 'infer_requests_total{model="_other",route="v1"} 3.0' in text


async def test_access_log_is_json_with_request_id(start_server: Start,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _, client = await start_server(access_log=True)
    with caplog.at_level(logging.INFO, logger="inferno.access"):
        await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)},
                          headers={"x-request-id": "req-42"})
    record = next(r for r in caplog.records if r.name == "inferno.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "POST /v1/models/mlp:predict 200"
    assert (line["level"], line["logger"], line["status"]) == ("INFO", "inferno.access", 200)
    assert line["request_id"] == "req-42"
    assert line["duration_ms"] > 0 and line["ts"].endswith("+00:00")
