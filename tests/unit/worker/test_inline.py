"""Where the batcher runs a model: a TorchScript model whose batches take less than the hand-off
to a thread runs on the event loop; a Python model always runs on its thread (its code may
block). What is tried: a 4 → 2 TorchScript Linear and the Python ``sum`` model, each served
sequentially through the in-memory broker, with the thread of every model call recorded."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from common.metrics import WorkerMetrics
from common.model.config import Device, ModelConfig
from common.model.repository import ModelRepository
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictRequest
from harness.built import BUILT, TINY
from tests.unit.conftest import TEST_MODELS
from worker.batcher import Batcher
from worker.runtime import Parts, Runtime, create_runtime

Array = npt.NDArray[Any]
# harness.built traces the 4 -> 2 model with torch.jit.trace, which torch 2.13 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")


class Threads:
    """The runtime, recording which thread each batch ran on."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.threads: list[int] = []

    def predict_parts(self, parts: Parts) -> dict[str, Array]:
        self.threads.append(threading.get_ident())
        return self.runtime.predict_parts(parts)


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    directory = tmp_path / TINY / "1"
    directory.mkdir(parents=True)
    BUILT[TINY](directory)
    return tmp_path


async def served(root: Path, model: str, width: int, calls: int) -> list[bool]:
    """Serve ``calls`` one-row requests one after another; per call, whether it ran on the
    event loop's thread."""
    repository = ModelRepository(root)
    repository.scan()
    entry = repository.get(model)
    runtime = create_runtime(entry.config, entry.directory, Device.CPU)
    runtime.load()
    spy = Threads(runtime)
    broker = InMemoryBroker()
    config: ModelConfig = entry.config
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(config, spy, executor, WorkerMetrics(CollectorRegistry()))  # type: ignore[arg-type]
        batcher.start()
        await broker.declare_queue(model, 1, 64)
        subscription = await broker.consume(config, batcher.submit, 8)
        for _ in range(calls):
            x = np.ones((1, width), np.float32)
            checked = config.signature.validate_request({"x": x}, None, max_rows=32, model=model)
            reply = await broker.request(PredictRequest(
                model=model, version=1, inputs={"x": x}, checked=checked,
                deadline=time.time() + 10))
            assert reply.error is None
        await subscription.cancel()
        await batcher.drain(5)
    return [ident == threading.get_ident() for ident in spy.threads]


async def test_a_fast_torchscript_model_moves_onto_the_event_loop(tiny_repo: Path) -> None:
    # Enough calls for the moving mean to forget a slow first few (TorchScript optimises the
    # graph on its early runs).
    on_loop = await served(tiny_repo, TINY, 4, 200)
    assert not on_loop[0]  # nothing measured yet: its first batch goes to the thread
    assert any(on_loop[1:])  # 4 -> 2 takes microseconds: the hand-off would cost more


async def test_a_python_model_always_runs_on_its_thread() -> None:
    assert not any(await served(TEST_MODELS, "sum", 3, 20))


