"""The core tritonclient checks again, against a cluster: a facade and a worker that talk only
through a real RabbitMQ vhost and Redis prefix (tests/distributed/conftest.py).

The checks are ``TestCore`` of test_triton_client.py, inherited unchanged; only the ``server``
fixture differs. Binary tensors here cross the queue hop in the wire format, where the embedded
server hands the worker views on the request body.
"""

from __future__ import annotations

import pytest

from tests.distributed.conftest import Cluster, cluster, running, wait_ready  # noqa: F401 - fixtures
from tests.v2.conftest import CORE_MODELS, Serve, Served
from tests.v2.test_triton_client import TestCore as _Core

pytestmark = pytest.mark.asyncio


@pytest.fixture
# Overrides tests/v2/conftest.py's embedded ``server`` for this module.
async def server(running: Cluster, serve: Serve) -> Served:  # noqa: F811 - running
    await running.worker(preload=CORE_MODELS)
    facade, _ = await running.facade()
    await wait_ready(facade)
    return await serve(facade.app)


class TestCoreDistributed(_Core):
    """Every check of ``TestCore``, through the broker."""
