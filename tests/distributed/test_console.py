"""The admin console's document (facade/console.py) in distributed mode: a facade and two
workers over the real RabbitMQ and Redis. Models, workers, queues and batch sizes all come from
the cluster: the facade runs no batches itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import x_rows

pytestmark = pytest.mark.asyncio


def _batches(registry: CollectorRegistry, model: str) -> tuple[int, int]:
    """What one worker's own metrics say it ran: (batches, rows)."""
    labels = {"model": model}
    return (int(registry.get_sample_value("infer_batch_size_count", labels) or 0),
            int(registry.get_sample_value("infer_batch_size_sum", labels) or 0))


def _version(state: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    [model] = [m for m in state["models"] if m["name"] == name]
    [entry] = [v for v in model["versions"] if v["version"] == version]
    return {**entry, "model": model}


async def test_console_state_shows_the_cluster(running: Cluster) -> None:
    facade, client = await running.facade()
    first, first_metrics = await running.worker()
    await wait_ready(facade)
    for _ in range(3):  # one after the other: a batch of 2 rows each, on the one worker
        response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(2)})
        assert response.status_code == 200, response.text
    assert _batches(first_metrics, "mlp") == (3, 6)
    second, second_metrics = await running.worker()
    view = facade.view
    assert await view.wait_for(
        lambda: True if sum(w.serves("mlp", 2) for w in view.workers) == 2 else None, 60)
    # Concurrent requests spread over both workers' consumers and batch there.
    responses = await asyncio.gather(*(
        client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)}) for _ in range(24)))
    assert [r.status_code for r in responses] == [200] * 24
    ran = [_batches(first_metrics, "mlp"), _batches(second_metrics, "mlp")]
    assert sum(rows for _, rows in ran) == 6 + 24

    # Once both heartbeats carry those counters, the view sums them (heartbeats: 0.5 s).
    def summed() -> tuple[int, int] | None:
        totals = [w.statistics.versions.get("mlp:2") for w in view.workers]
        counted = [t for t in totals if t is not None]
        if len(counted) < 2:
            return None
        found = (sum(t.execution_count for t in counted), sum(t.inference_count for t in counted))
        return found if found == (ran[0][0] + ran[1][0], 30) else None

    assert await view.wait_for(summed, 30), view.workers
    await facade.queues.poll()  # a queue reading now, not the next period's
    response = await client.get("/console/api/state")
    assert response.status_code == 200
    state = response.json()

    assert state["ready"] is True
    assert sorted(w["id"] for w in state["workers"]) == sorted([first.worker_id,
                                                               second.worker_id])
    assert all(w["loaded"]["mlp"] == [2] and w["device"] == "cpu" for w in state["workers"])
    assert isinstance(state["dead_letters"], int)  # RabbitMQ has a dead-letter queue
    v2 = _version(state, "mlp", 2)
    assert v2["active"] and v2["desired"]
    assert sorted(v2["workers"]) == sorted([first.worker_id, second.worker_id])
    assert v2["queue"] == {"messages": 0, "consumers": 2}
    v1 = _version(state, "mlp", 1)
    assert v1["workers"] == [] and v1["queue"] is None
    metrics = v2["model"]["metrics"]
    assert metrics["requests"] == 27 and metrics["errors"] == 0
    assert metrics["latency"]["count"] == 27
    assert metrics["batch"] == {"batches": ran[0][0] + ran[1][0], "rows": 30}
    # The models no worker serves are listed with nothing loaded.
    bag = _version(state, "bag", 1)
    assert bag["workers"] == [] and bag["queue"] is None
    assert bag["model"]["metrics"]["batch"] == {"batches": 0, "rows": 0}
