"""A broker link that goes silent (packets dropped, no reset: nothing tells the facade it is
gone until AMQP heartbeats time out, a minute later) must not hold a predict past its deadline:
every wait of a request is bounded by it, the first request's reply-queue declaration included.

The silence is a stall of a ``CuttableProxy`` (harness/proxy.py) between the facade and the
broker; the worker has a link of its own.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.distributed.conftest import Cluster, wait_ready
from tests.integration.conftest import error_of

pytestmark = pytest.mark.asyncio

BODY = {"inputs": {"x": {"data": [[1.0, 2.0]]}}, "timeout_ms": 500}


async def test_a_silent_link_answers_by_the_deadline_even_the_first_request(
        running: Cluster) -> None:
    proxy, proxied = await running.broker_proxy()
    await running.worker(preload=["sum"])
    facade, client = await running.facade(broker_url=proxied)
    await wait_ready(facade)
    proxy.stall()  # before the facade's first request: its reply queue is not declared yet
    try:
        for _ in range(2):  # the first request, and one after it
            started = time.monotonic()
            async with asyncio.timeout(30):
                response = await client.post("/v1/models/sum:predict", json=BODY)
            assert time.monotonic() - started < 2.0, "held past the deadline (0.5 s)"
            assert response.status_code in (503, 504), response.text
            assert error_of(response)["code"] in ("broker_unavailable", "deadline_exceeded")
    finally:
        proxy.resume()
    async with asyncio.timeout(60):  # the link is back: served again
        while (await client.post("/v1/models/sum:predict", json=BODY)).status_code != 200:  # noqa: ASYNC110 - another process's recovery
            await asyncio.sleep(0.2)
