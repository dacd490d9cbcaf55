"""Failure statuses through HTTP: 503 overloaded, 504 deadline, 500 model failures, 503 no worker.

Each uses a fake model from tests/models (slow, failing, badrows) and checks that the failure
stays with the requests it belongs to: everything else is still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from inferno.embedded import Embedded
from tests.gate import HOLD, Gate, until_done
from tests.integration.conftest import Start, error_of, slow_body

pytestmark = pytest.mark.asyncio


def metric(embedded: Embedded, name: str, **labels: str) -> float:
    return embedded.registry.get_sample_value(name, labels) or 0.0


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    # A batch starting on the worker thread has no public event to await: poll, bounded.
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_full_queue_answers_503_at_once_and_serves_the_rest(start_server: Start,
                                                                  gate: Gate) -> None:
    _, client = await start_server(preload=["slow"])
    # Every request waits for the gate, so while the first batch holds the single runner slot
    # the model takes exactly prefetch (4 rows x 1 slot x 2 = 8) + queue max_length (8) = 16,
    # and the other 8 are refused while nothing has been computed.
    calls = [asyncio.create_task(client.post("/v1/models/slow:predict", json=slow_body(HOLD)))
             for _ in range(24)]
    await until_done(calls, 8)
    gate.open()
    responses = await asyncio.gather(*calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 16 + [503] * 8
    refused = next(r for r in responses if r.status_code == 503)
    assert error_of(refused) == {"code": "overloaded", "message": (
        "Model 'slow' version 1 is overloaded: 8 requests already queued")}
    assert refused.headers["retry-after"] == "1"  # every 503 says when to come back
    ok = await client.post("/v1/models/slow:predict", json=slow_body(0))
    assert ok.status_code == 200


async def test_deadline_is_504_and_the_expired_request_is_never_computed(
        start_server: Start, gate: Gate) -> None:
    embedded, client = await start_server(preload=["slow"])
    holder = asyncio.create_task(client.post("/v1/models/slow:predict", json=slow_body(HOLD)))
    await until(lambda: metric(embedded, "infer_batch_size_count", model="slow") == 1)
    late = await client.post("/v1/models/slow:predict", json=slow_body(0, timeout_ms=50))
    assert late.status_code == 504
    assert error_of(late)["code"] == "deadline_exceeded"
    gate.open()
    assert (await holder).status_code == 200
    after = await client.post("/v1/models/slow:predict", json=slow_body(0))
    assert after.status_code == 200
    # The late request was dropped unanswered before a batch, not computed: two batches ran.
    assert metric(embedded, "infer_expired_total", model="slow") == 1
    assert metric(embedded, "infer_batch_size_count", model="slow") == 2


async def test_model_exception_fails_only_its_batch(start_server: Start) -> None:
    embedded, client = await start_server(preload=["failing"])
    bad = await client.post("/v1/models/failing:predict",
                            json={"inputs": {"x": {"data": [[1.0, -1.0]]}}})
    assert bad.status_code == 500
    assert error_of(bad) == {"code": "model_failed", "message":
                             "Model 'failing:1' failed: ValueError: negative input"}
    good = await client.post("/v1/models/failing:predict",
                             json={"inputs": {"x": {"data": [[1.0, 2.0]]}}})
    assert good.status_code == 200
    assert good.json()["outputs"]["total"]["data"] == [3.0]
    assert metric(embedded, "infer_model_errors_total", model="failing",
                  error="ValueError") == 1


async def test_good_requests_beside_a_failing_one_still_succeed(start_server: Start) -> None:
    _, client = await start_server(preload=["failing"])
    bodies = [{"inputs": {"x": {"data": [[float(i), 1.0]]}}} for i in range(-1, 30)]
    responses = await asyncio.gather(*(client.post("/v1/models/failing:predict", json=b)
                                       for b in bodies))
    assert responses[0].status_code == 500  # the negative row
    failed = [r for r in responses if r.status_code != 200]
    assert all(error_of(r)["code"] == "model_failed" for r in failed)
    # Only the batch that held the negative row failed (max_batch_size 8); every other caller
    # got its own row's sum back.
    assert len(failed) <= 8
    for i, response in zip(range(-1, 30), responses, strict=True):
        if response.status_code == 200:
            assert response.json()["outputs"]["total"]["data"] == [float(i) + 1.0]


async def test_wrong_row_count_is_500_naming_both_numbers(start_server: Start) -> None:
    _, client = await start_server(preload=["badrows"])
    response = await client.post("/v1/models/badrows:predict",
                                 json={"inputs": {"x": {"data": [[1.0], [2.0]]}}})
    assert response.status_code == 500
    message = error_of(response)["message"]
    assert "returned 3 rows in output 'total' for a batch of 2 rows" in message


async def test_broken_artifact_fails_the_load_with_the_reason(start_server: Start,
                                                             repo) -> None:  # type: ignore[no-untyped-def]
    (repo / "mlp" / "1" / "model.pt").write_bytes(b"not a torchscript file")
    _, client = await start_server()
    response = await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "model_failed"
    assert error["message"].startswith("Model 'mlp' version 1 failed to load: ")
    listed = (await client.get("/v1/models")).json()["models"]
    assert next(m for m in listed if m["name"] == "mlp")["desired"] == [2]
    still = await client.post("/v1/models/mlp:predict",
                              json={"inputs": {"x": {"data": [[0.0] * 256]}}})
    assert still.status_code == 200


async def test_no_live_worker_is_503(start_server: Start) -> None:
    embedded, client = await start_server()
    await embedded.worker.stop()
    await embedded.facade.view.refresh()
    response = await client.post("/v1/models/mlp:predict",
                                 json={"inputs": {"x": {"data": [[0.0] * 256]}}})
    assert response.status_code == 503
    assert error_of(response) == {"code": "unavailable", "message":
                                  "No live worker serves model 'mlp' version 2 yet"}
    assert (await client.get("/health/ready")).status_code == 503


async def test_unknown_route_and_method_use_the_error_body(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = await client.delete("/v1/models")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
