"""Triton's statistics extension over REST, through Triton's own client
(``InferenceServerClient.get_inference_statistics``), against the embedded server.

Counts are read until they include what was sent (``settled``: a bounded re-read, in case a
report is late), then checked exactly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient

from tests.v2.conftest import BAD_VERSION, Served, ServeEmbedded, tensor, unknown
from tests.v2.test_triton_client import X

pytestmark = pytest.mark.asyncio

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
             "cache_hit", "cache_miss")


async def settled(server: Served, model: str, version: str, requests: int) -> dict[str, Any]:
    """The version's statistics once they count ``requests`` answered or failed requests."""
    async with asyncio.timeout(10):
        while True:
            stats = await server.triton(
                lambda c: c.get_inference_statistics(model, version))
            [stat] = stats["model_stats"]
            done = stat["inference_stats"]
            if done["success"]["count"] + done["fail"]["count"] >= requests:
                return stat  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)


async def one_row_infers(server: Served, count: int) -> None:
    """``count`` infers of one row of mlp, one after the other."""
    def infer(client: InferenceServerClient) -> None:
        for _ in range(count):
            client.infer("mlp", [tensor("x", X[:1])])

    await server.triton(infer)


def check_consistent(stat: dict[str, Any]) -> None:
    """What holds of every version's statistics: the batches add up to the counts."""
    inference = stat["inference_stats"]
    assert set(inference) == set(DURATIONS)
    done = inference["success"]["count"]
    for name in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[name]["count"] == done, name
    batches = stat["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == stat["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == (
        stat["inference_count"])
    assert [b["batch_size"] for b in batches] == sorted(b["batch_size"] for b in batches)


async def test_n_one_row_requests_are_counted_with_their_times(
        serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"])
    before = await server.triton(lambda c: c.get_inference_statistics("mlp", "2"))
    assert before["model_stats"][0]["inference_count"] == 0  # warm-up is not counted
    requests = 5
    await one_row_infers(server, requests)
    stat = await settled(server, "mlp", "2", requests)
    assert (stat["name"], stat["version"]) == ("mlp", "2")
    assert stat["inference_count"] == requests
    assert 1 <= stat["execution_count"] <= requests
    inference = stat["inference_stats"]
    assert inference["success"]["count"] == requests and inference["fail"]["count"] == 0
    for name in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[name]["ns"] > 0, name
    # A request's time in the worker holds its queue and its batch's compute times.
    assert inference["success"]["ns"] >= inference["queue"]["ns"] + inference[
        "compute_infer"]["ns"]
    assert inference["cache_hit"] == inference["cache_miss"] == {"count": 0, "ns": 0}
    assert abs(stat["last_inference"] - time.time() * 1000) < 60_000
    check_consistent(stat)

    # A request of 3 rows is 3 inferences in one execution, of batch size 3.
    await server.triton(lambda c: c.infer("mlp", [tensor("x", X)]))
    three = await settled(server, "mlp", "2", requests + 1)
    assert three["inference_count"] == requests + 3
    assert three["execution_count"] == stat["execution_count"] + 1
    assert {b["batch_size"] for b in three["batch_stats"]} >= {3}
    check_consistent(three)


async def test_every_version_is_listed_and_a_model_lists_its_versions(server: Served) -> None:
    everything = await server.triton(lambda c: c.get_inference_statistics())
    listed = {(s["name"], s["version"]) for s in everything["model_stats"]}
    # Loaded or not: mlp 1 is in the repository and never loaded, sum is not loaded at all.
    assert {("mlp", "1"), ("mlp", "2"), ("bag", "1"), ("sum", "1")} <= listed
    for stat in everything["model_stats"]:
        check_consistent(stat)
    mlp = await server.triton(lambda c: c.get_inference_statistics("mlp"))
    assert [s["version"] for s in mlp["model_stats"]] == ["1", "2"]
    never = mlp["model_stats"][0]
    assert (never["inference_count"], never["execution_count"], never["last_inference"],
            never["batch_stats"]) == (0, 0, 0, [])


async def test_a_request_the_model_fails_counts_as_failed(serve_embedded: ServeEmbedded
                                                          ) -> None:
    server = await serve_embedded(preload=["failing"])

    def infer(client: InferenceServerClient) -> None:
        client.infer("failing", [tensor("x", np.ones((2, 3), np.float32))])

    await server.triton(infer)
    status, message = await server.refused(
        lambda c: c.infer("failing", [tensor("x", -np.ones((1, 3), np.float32))]))
    assert status == 500 and "negative input" in message
    stat = await settled(server, "failing", "1", 2)
    inference = stat["inference_stats"]
    assert (inference["success"]["count"], inference["fail"]["count"]) == (1, 1)
    assert inference["fail"]["ns"] > 0
    # The failed batch is no execution and no inference: only the answered one is.
    assert (stat["inference_count"], stat["execution_count"]) == (2, 1)
    assert [b["batch_size"] for b in stat["batch_stats"]] == [2]
    check_consistent(stat)


async def test_unknown_models_and_versions_and_bad_versions_are_refused(
        serve_embedded: ServeEmbedded) -> None:
    server = await serve_embedded(preload=["mlp"], api_token="api-secret")
    auth = {"authorization": "Bearer api-secret"}

    def stats(model: str = "", version: str = "") -> Any:
        return lambda c: c.get_inference_statistics(model, version, headers=auth)

    assert await server.refused(stats("nope")) == (
        404, unknown("nope", "Model 'nope' not found in the repository"))
    assert await server.refused(stats("nope", "1")) == (
        404, unknown("nope", "Model 'nope' not found in the repository"))
    assert await server.refused(stats("mlp", "9")) == (
        404, unknown("mlp", "Model 'mlp' has no version 9 (versions: 1, 2)"))
    status, message = await server.refused(stats("mlp", "two"))
    assert status == 400 and message.startswith(
        f"{BAD_VERSION}'two': path.version: Input should be a valid integer"), message
    assert await server.refused(stats("mlp", "0")) == (
        400, f"{BAD_VERSION}'0': path.version: Input should be greater than or equal to 1")
    # The API token guards statistics as it guards metadata.
    for path in ("/v2/models/stats", "/v2/models/mlp/stats", "/v2/models/mlp/versions/2/stats"):
        assert (await server.http.get(path)).status_code == 401, path
        assert (await server.http.get(path, headers=auth)).status_code == 200, path
    assert (await server.triton(stats("mlp", "2")))["model_stats"][0]["version"] == "2"
