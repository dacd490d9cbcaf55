"""The control plane on Redis: every replica agrees and converges, through faults."""

from __future__ import annotations

import asyncio
import signal
import time
from urllib.parse import urlsplit

import pytest

from harness.proxy import CuttableProxy
from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import error_of, x_rows

pytestmark = pytest.mark.asyncio


async def test_load_on_one_facade_predict_through_another(running: Cluster) -> None:
    worker_a, _ = await running.worker(preload=["mlp"])
    worker_b, _ = await running.worker(preload=["mlp"])
    (facade_a, client_a), (facade_b, client_b) = await running.facade(), await running.facade()
    await wait_ready(facade_a)
    loaded = await client_a.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"name": "mlp", "active": 2, "loaded": [1, 2]}
    await facade_b.view.wait_for(
        lambda: True if facade_b.view.serving("mlp", 1) == 2 else None, 30)
    pinned = await client_b.post("/v1/models/mlp/versions/1:predict", json={"inputs": x_rows(1)})
    assert pinned.status_code == 200 and pinned.json()["version"] == 1
    view_a = (await client_a.get("/v1/models")).json()
    view_b = (await client_b.get("/v1/models")).json()
    assert view_a == view_b
    mlp = next(m for m in view_a["models"] if m["name"] == "mlp")
    assert mlp["loaded"] == [1, 2]
    assert sorted(mlp["workers"]["1"]) == sorted([worker_a.worker_id, worker_b.worker_id])
    metrics = (await client_b.get("/metrics")).text
    assert 'inferno_live_workers{model="mlp"} 2.0' in metrics


async def test_rollout_under_load_across_replicas_loses_nothing(running: Cluster) -> None:
    """The documented rollout (docs/operations.md): load the new version, activate it, unload
    the old one, while two facades serve steady traffic: no request fails."""
    await running.worker(preload=["mlp"])
    await running.worker(preload=["mlp"])
    (facade_a, client_a), (facade_b, client_b) = await running.facade(), await running.facade()
    await wait_ready(facade_a)
    await wait_ready(facade_b)
    versions: list[int] = []
    failures: list[str] = []
    flowing = asyncio.Event()
    done = asyncio.Event()

    async def caller(client) -> None:  # type: ignore[no-untyped-def]
        while not done.is_set():
            response = await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
            if response.status_code != 200:
                failures.append(response.text)
            else:
                versions.append(response.json()["version"])
            if len(versions) >= 30:
                flowing.set()

    callers = [asyncio.create_task(caller(c)) for c in (client_a, client_b) * 4]
    await asyncio.wait_for(flowing.wait(), 30)
    loaded = await client_a.post("/v1/models:load", json={"name": "mlp", "version": 1})
    activated = await client_b.post("/v1/models:activate", json={"name": "mlp", "version": 1})
    after = len(versions)
    async with asyncio.timeout(30):
        while versions[-1] != 1 or len(versions) < after + 30:  # noqa: ASYNC110 - load runs on
            await asyncio.sleep(0.05)
    unloaded = await client_a.post("/v1/models:unload", json={"name": "mlp", "version": 2})
    after = len(versions)
    async with asyncio.timeout(30):
        while len(versions) < after + 30:  # noqa: ASYNC110 - load runs on
            await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*callers)
    for step in (loaded, activated, unloaded):
        assert step.status_code == 200, step.text
    assert failures == []
    assert versions[0] == 2 and versions[-1] == 1
    assert unloaded.json()["loaded"] == [1]


async def test_a_dead_worker_leaves_the_view_within_three_heartbeats(running: Cluster) -> None:
    running.worker_process(INFERNO_PRELOAD="mlp")
    victim = running.worker_process(INFERNO_PRELOAD="mlp")
    facade, client = await running.facade()
    view = facade.view
    await view.wait_for(lambda: True if view.serving("mlp", 2) == 2 else None, 60)
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await view.wait_for(lambda: True if view.serving("mlp", 2) == 1 else None, 10)
    interval = 0.5  # INFERNO_HEARTBEAT_INTERVAL_S of the cluster fixture
    assert time.monotonic() - killed <= 3 * interval + 0.5
    assert (await client.post("/v1/models/mlp:predict", json={"inputs": x_rows(1)})
            ).status_code == 200
    listed = (await client.get("/v1/models")).json()["models"]
    assert len(next(m for m in listed if m["name"] == "mlp")["workers"]["2"]) == 1


async def test_redis_outage_keeps_serving_and_recovers(running: Cluster) -> None:
    target = urlsplit(running.redis.url)
    proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    running.closers.append(proxy.aclose)
    running.redis = type(running.redis)(f"redis://127.0.0.1:{proxy.port}/0",
                                        running.redis.prefix)
    await running.worker(preload=["mlp"])
    facade, client = await running.facade()
    await wait_ready(facade)
    body = {"inputs": x_rows(1)}

    await proxy.cut()
    # Longer than the heartbeat TTL: the workers' keys expire while Redis is unreachable.
    for _ in range(6):
        served = await client.post("/v1/models/mlp:predict", json=body)
        assert served.status_code == 200, served.text
        await asyncio.sleep(0.4)
    admin = await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert admin.status_code == 503 and error_of(admin)["code"] == "state_unavailable"

    await proxy.restore()
    for _ in range(10):  # right after recovery too: no "no worker" gap
        assert (await client.post("/v1/models/mlp:predict", json=body)).status_code == 200
        await asyncio.sleep(0.1)
    loaded = await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loaded"] == [1, 2]


async def test_admin_call_no_worker_can_serve_is_504_with_the_reason(running: Cluster) -> None:
    await running.worker(preload=["mlp"], models=["mlp"])  # this worker never serves "bag"
    facade, client = await running.facade(admin_timeout_s=1.5)
    await wait_ready(facade)
    started = time.monotonic()
    response = await client.post("/v1/models:load", json={"name": "bag"})
    assert response.status_code == 504
    assert error_of(response) == {"code": "admin_timeout", "message":
                                  "No live worker reported model 'bag' version 1 loaded "
                                  "within 1.5s"}
    assert 1.5 <= time.monotonic() - started < 5
