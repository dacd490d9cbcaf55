"""The data plane (facade/data_plane.py): the one pipeline every protocol's predict goes through.

Real parts: the sample repository, an ``InMemoryStateStore`` holding a worker's heartbeat, the
``ClusterView`` over it and an ``InMemoryBroker`` whose consumer (the seam where a worker would
be) records each ``PredictRequest`` and answers it. The protocol is a scripted ``ProtocolCall``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from common.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailed,
    ModelNotFound,
    ModelNotLoaded,
    Unavailable,
)
from common.metrics import FacadeMetrics
from common.model.config import ModelConfig
from common.model.repository import ModelRepository
from common.model.signature import Checked
from common.settings import FacadeSettings
from common.state.memory import InMemoryStateStore
from common.state.store import WorkerInfo
from common.transport.broker import Delivery
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictReply, PredictRequest
from facade.cluster_view import ClusterView
from facade.data_plane import DataPlane
from tests.unit.conftest import SAMPLE_MODELS

X = np.full((2, 256), 0.5, np.float32)


@dataclass
class Call:
    """A protocol call whose envelope, decoded tensors and encoding are scripted."""

    version: int | None = None
    timeout_ms: float | None = None
    inputs: dict[str, Any] = field(default_factory=lambda: {"x": X})
    outputs: list[str] | None = None
    fail_in: str = ""
    route: str = "v9"
    steps: list[str] = field(default_factory=list)

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if self.fail_in == name:
            raise (InvalidInput(f"bad {name}") if name != "encode" else RuntimeError("encoder"))

    def parse(self) -> tuple[int | None, float | None]:
        self._step("parse")
        return self.version, self.timeout_ms

    def decode(self, config: ModelConfig) -> tuple[dict[str, Any], list[str] | None]:
        self._step("decode")
        return self.inputs, self.outputs

    def encode(self, config: ModelConfig, outputs: dict[str, Any]) -> tuple[int, list[str]]:
        self._step("encode")
        return config.version, sorted(outputs)


@dataclass
class Served:
    plane: DataPlane
    broker: InMemoryBroker
    store: InMemoryStateStore
    view: ClusterView
    registry: CollectorRegistry
    seen: list[PredictRequest]
    answer: PredictReply | None = None

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    repository = ModelRepository(SAMPLE_MODELS)
    repository.scan()
    registry = CollectorRegistry()
    metrics = FacadeMetrics(registry)
    store, broker = InMemoryStateStore(), InMemoryBroker()
    await store.set_active("mlp", 2)
    await store.set_desired("mlp", 1, loaded=True)
    await store.put_worker(WorkerInfo("w1", "host", "cpu", loaded={"mlp": (1, 2)}), ttl_s=60)
    view = ClusterView(store, repository, metrics, refresh_interval_s=60, grace_s=1)
    await view.start()
    settings = FacadeSettings(request_timeout_ms=5_000, max_request_timeout_ms=10_000)
    served = Served(DataPlane(settings, broker, view, metrics), broker, store, view, registry, [])

    def handle(delivery: Delivery) -> None:
        served.seen.append(delivery.request)
        checked = delivery.request.checked
        reply = served.answer or PredictReply({  # what a worker returns: the outputs asked
            n: np.zeros((checked.rows, 10), np.float32)
            for n in checked.outputs or ("logits", "probs")})
        asyncio.get_running_loop().create_task(_settle(delivery, reply))

    for version in (1, 2):
        config = repository.get("mlp", version).config
        await broker.declare_queue("mlp", version, 16)
        await broker.consume(config, handle, prefetch=16)
    yield served
    await view.aclose()
    await broker.aclose()


async def _settle(delivery: Delivery, reply: PredictReply) -> None:
    await delivery.reply(reply)
    await delivery.ack()


async def test_the_pipeline_runs_in_order_and_publishes_a_checked_request(served: Served) -> None:
    call = Call(outputs=["probs", "probs"])
    before = time.time()
    assert await served.plane.infer("mlp", None, call, "req-1") == (2, ["probs"])
    assert call.steps == ["parse", "decode", "encode"]
    [request] = served.seen
    assert (request.model, request.version, request.request_id) == ("mlp", 2, "req-1")
    assert request.checked == Checked(rows=2, dims=(("x", (256,)),), outputs=["probs"])
    assert request.dtypes == served.view.repository.get("mlp", 2).config.signature.input_dtypes
    assert before + 5 <= request.deadline <= time.time() + 5  # the default timeout
    assert served.count("infer_requests_total", model="mlp", route="v9") == 1
    assert served.count("infer_latency_seconds_count", model="mlp", route="v9") == 1


async def test_the_version_pinned_in_the_url_wins_over_the_one_asked_in_the_body(
        served: Served) -> None:
    assert (await served.plane.infer("mlp", 1, Call(version=2)))[0] == 1
    assert (await served.plane.infer("mlp", None, Call(version=1)))[0] == 1
    assert [r.version for r in served.seen] == [1, 1]


async def test_the_timeout_asked_is_capped_by_the_maximum(served: Served) -> None:
    await served.plane.infer("mlp", None, Call(timeout_ms=60_000))
    await served.plane.infer("mlp", None, Call(timeout_ms=100))
    deadlines = [r.deadline - r.published for r in served.seen]
    assert deadlines == pytest.approx([10.0, 0.1], abs=0.01)


@pytest.mark.parametrize(("model", "call", "error", "label", "steps"), [
    ("mlp", Call(fail_in="parse"), InvalidInput, "mlp", ["parse"]),
    ("nope", Call(), ModelNotFound, "_other", ["parse"]),
    ("mlp", Call(version=9), ModelNotFound, "mlp", ["parse"]),
    ("mlp", Call(fail_in="decode"), InvalidInput, "mlp", ["parse", "decode"]),
    ("mlp", Call(inputs={"x": np.zeros((65, 256), np.float32)}), InvalidInput, "mlp",
     ["parse", "decode"]),
    ("mlp", Call(inputs={"x": np.zeros((1, 3), np.float32)}), InvalidInput, "mlp",
     ["parse", "decode"]),
    ("mlp", Call(outputs=["nope"]), InvalidInput, "mlp", ["parse", "decode"]),
    ("mlp", Call(inputs={}), InvalidInput, "mlp", ["parse", "decode"]),
], ids=["parse", "unknown-model", "unknown-version", "decode", "too-many-rows", "shape",
        "unknown-output", "no-inputs"])
async def test_every_refusal_is_counted_by_its_code_and_never_published(
        served: Served, model: str, call: Call, error: type[Exception], label: str,
        steps: list[str]) -> None:
    with pytest.raises(error) as info:
        await served.plane.infer(model, None, call)
    assert call.steps == steps
    assert served.seen == []
    code = info.value.code  # type: ignore[attr-defined]
    assert served.count("infer_exceptions_total", model=label, route="v9", code=code) == 1
    assert served.count("infer_requests_total", model=label, route="v9") == 1


async def test_a_version_nobody_serves_is_unavailable_and_an_unloaded_one_not_loaded(
        served: Served) -> None:
    await served.store.put_worker(WorkerInfo("w1", "host", "cpu", loaded={"mlp": (2,)}), 60)
    await served.store.set_desired("mlp", 2, loaded=True)
    await served.view.refresh()
    with pytest.raises(Unavailable):
        await served.plane.infer("mlp", 1, Call())
    await served.store.set_desired("mlp", 1, loaded=False)
    await served.view.refresh()
    with pytest.raises(ModelNotLoaded):
        await served.plane.infer("mlp", 1, Call())


async def test_an_error_reply_is_raised_and_counted(served: Served) -> None:
    served.answer = PredictReply(error=ModelFailed("it broke"))
    with pytest.raises(ModelFailed, match="it broke"):
        await served.plane.infer("mlp", None, Call())
    assert served.count("infer_exceptions_total", model="mlp", route="v9",
                        code="model_failed") == 1


async def test_an_unexpected_exception_is_counted_as_internal(served: Served) -> None:
    call = Call(fail_in="encode")
    with pytest.raises(RuntimeError, match="encoder"):
        await served.plane.infer("mlp", None, call)
    assert served.count("infer_exceptions_total", model="mlp", route="v9", code="internal") == 1
    assert served.count("infer_requests_total", model="mlp", route="v9") == 1


async def test_the_wait_ends_at_the_deadline(served: Served) -> None:
    await served.broker.delete_queue("mlp", 2)
    await served.broker.declare_queue("mlp", 2, 16)  # a queue nobody consumes
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(served.plane.infer("mlp", None, Call(timeout_ms=50)), 5)
    assert served.count("infer_exceptions_total", model="mlp", route="v9",
                        code="deadline_exceeded") == 1


async def test_a_tensor_past_the_element_limit_is_refused_before_the_signature(
        served: Served) -> None:
    """The shared admission (PredictRequest.admit) with INFERNO_MAX_ELEMENTS_PER_TENSOR."""
    plane = DataPlane(FacadeSettings(max_elements_per_tensor=256), served.broker, served.view,
                      FacadeMetrics(CollectorRegistry()))
    wrong = {"x": np.zeros((2, 300), np.float32)}  # the wrong shape too: the limit speaks first
    with pytest.raises(InvalidInput, match="Input 'x': 600 elements exceed the limit of 256"):
        await plane.infer("mlp", None, Call(inputs=wrong))
    assert served.seen == []
