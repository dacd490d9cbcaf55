"""``scripts/load_test.py`` (Locust) against an ``inferno facade`` and an ``inferno worker``
process on a real RabbitMQ vhost and Redis prefix: the command the README documents for
``inferno serve`` works unchanged, the admin load included."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.distributed.conftest import Cluster
from tests.integration.test_load_test import (
    DOCUMENTED,
    free_port,
    requests_total,
    run_locust,
    version_state,
    wait_http,
)
from tests.integration.test_load_test import pytestmark as needs_locust

pytestmark = [pytest.mark.asyncio, needs_locust]


async def start(running: Cluster) -> tuple[subprocess.Popen[bytes], str]:
    """A worker that preloads only ``bag`` (mlp is in the repository, not loaded), a facade;
    the facade's base URL once the cluster is ready."""
    running.worker_process(INFERNO_PRELOAD="bag", INFERNO_TORCH_THREADS="1")
    port = free_port()
    facade = running.facade_process(INFERNO_PORT=str(port), INFERNO_ACCESS_LOG="false")
    base = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(wait_http, facade, f"{base}/health/ready")
    return facade, base


async def test_the_documented_command_loads_and_drives_a_cluster(running: Cluster,
                                                                 tmp_path: Path) -> None:
    _, base = await start(running)
    assert not version_state(base, "mlp", 2)  # not loaded yet: --load-model loads it
    run = await asyncio.to_thread(run_locust, base, tmp_path, *DOCUMENTED)
    assert run.code == 0, run.output[-3000:]
    assert run.requests > 0 and run.failures == 0, run.output[-3000:]
    assert version_state(base, "mlp", 2)
    seen = requests_total(base, "mlp")  # this facade's first mlp requests: the run's
    assert run.requests + 5 <= seen <= run.requests + 5 + 8


async def test_failures_through_a_facade_fail_the_run(running: Cluster, tmp_path: Path) -> None:
    _, base = await start(running)
    failed_load = await asyncio.to_thread(run_locust, base, tmp_path, "--model-name", "nope",
                                          "--load-model", users=2, run_time="30s")
    assert failed_load.code == 1 and failed_load.requests == 0
    assert "model_not_found" in failed_load.output
    payload = tmp_path / "bad.json"
    payload.write_text(json.dumps({"inputs": {"tokens": {"data": [[1, 2]]}}}))  # no mask
    invalid = await asyncio.to_thread(run_locust, base, tmp_path, "--model-name", "bag",
                                      "--payload-file", str(payload), "--verify-response",
                                      users=2, run_time="2s")
    assert invalid.code == 1, invalid.output[-3000:]
    assert invalid.requests > 0 and invalid.failures == invalid.requests
