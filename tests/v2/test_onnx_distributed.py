"""``TestOnnx`` of test_onnx.py again, against a cluster: a facade and a worker that talk only
through a real RabbitMQ vhost and Redis prefix (tests/distributed/conftest.py). The eight
concurrent infers cross the queue hop in the wire format (coalesced into envelopes) and still
meet in one batch on the worker; the failed load's reason reaches the facade through Redis."""

from __future__ import annotations

import pytest

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.v2.conftest import CORE_MODELS, Serve, Served
from tests.v2.test_onnx import TestOnnx as _Onnx
from tests.v2.test_onnx import write_onnx_models

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.asyncio


@pytest.fixture
# Overrides test_onnx.py's embedded ``onnx_server`` for this module.
async def onnx_server(running: Cluster, serve: Serve) -> Served:  # noqa: F811 - running
    write_onnx_models(running.repo)
    await running.worker(preload=[*CORE_MODELS, "scorer"])
    facade, _ = await running.facade()
    await wait_ready(facade)
    return await serve(facade.app)


class TestOnnxDistributed(_Onnx):
    """Every check of ``TestOnnx``, through the broker."""
