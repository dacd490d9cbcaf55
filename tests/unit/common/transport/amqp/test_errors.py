"""``broker_errors``: what says the broker is out of reach becomes ``BrokerUnavailable`` (503);
a ``RuntimeError`` of our own (a bug) goes through, to be answered 500 ``internal`` and logged
with its traceback rather than hidden as an outage."""

from __future__ import annotations

import logging

import aio_pika
import aiormq
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from common.errors import BrokerUnavailable, ModelNotLoaded
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.settings import FacadeSettings
from common.state.memory import InMemoryStateStore
from common.state.store import WorkerInfo
from common.transport.amqp.errors import broker_errors, is_broker_error
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictReply, PredictRequest
from facade.cluster_view import ClusterView
from facade.data_plane import DataPlane
from facade.front import Front
from tests.unit.conftest import SAMPLE_MODELS


def test_a_runtime_error_of_ours_is_not_an_outage() -> None:
    with pytest.raises(RuntimeError, match="a bug") as raised, broker_errors():
        raise RuntimeError("a bug")
    assert type(raised.value) is RuntimeError


@pytest.mark.parametrize("error", [
    aiormq.exceptions.ChannelInvalidStateError("<Channel> closed"),
    aio_pika.exceptions.ChannelInvalidStateError("No active transport in channel"),
    aiormq.exceptions.ConnectionChannelError(504, "CHANNEL_ERROR"),
    aiormq.exceptions.ChannelClosed(406, "PRECONDITION_FAILED"),
    aio_pika.exceptions.AMQPConnectionError("refused"),
    ConnectionResetError("reset by peer"),
], ids=lambda e: type(e).__name__)
def test_broker_errors_are_unavailable(error: Exception) -> None:
    with pytest.raises(BrokerUnavailable) as raised, broker_errors():
        raise error
    assert raised.value.__cause__ is error


async def test_aio_pikas_own_runtime_errors_are_unavailable() -> None:
    # aio-pika raises plain RuntimeErrors about a connection that is not open (here: never
    # opened; in production: reconnecting), e.g. when a channel is asked of it.
    connection = aio_pika.Connection("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(BrokerUnavailable, match="Connection was not opened"), broker_errors():
        connection.channel()


def test_inferno_errors_go_through() -> None:
    with pytest.raises(ModelNotLoaded), broker_errors():
        raise ModelNotLoaded("no queue")
    assert not is_broker_error(ValueError("x"))


class BuggyBroker(InMemoryBroker):
    """The in-memory broker with a bug in its client code, inside the error conversion."""

    async def request(self, request: PredictRequest, coalesce_rows: int = 1) -> PredictReply:
        with broker_errors():
            raise RuntimeError("dictionary changed size during iteration")


async def test_a_bug_is_a_logged_500_internal_not_a_503(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    metrics = FacadeMetrics(CollectorRegistry())
    store = InMemoryStateStore()
    await store.set_active("mlp", 2)
    await store.put_worker(WorkerInfo("w1", "host", "cpu", loaded={"mlp": (2,)}), ttl_s=60)
    view = ClusterView(store, repository, metrics, refresh_interval_s=60, grace_s=1)
    await view.start()
    plane = DataPlane(FacadeSettings(), BuggyBroker(), view, metrics)
    app = Front(FastAPI(), plane, max_body_bytes=1 << 20, access_log=False)
    body = {"inputs": {"x": {"data": np.full((1, 256), 0.5).tolist()}}}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://facade") as client:
            with caplog.at_level(logging.ERROR):
                response = await client.post("/v1/models/mlp:predict", json=body)
    finally:
        await view.aclose()
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "internal"
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert logged, "the bug is logged with its traceback"
