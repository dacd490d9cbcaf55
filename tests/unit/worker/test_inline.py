"""Where the batcher runs a model: a TorchScript model whose batches take less than the hand-off
to a thread runs on the event loop, and so does a lone batch of a somewhat slower one; a Python
model always runs on its thread (its code may block). What is tried: a 4 → 2 TorchScript Linear
and the Python ``sum`` model, served through the in-memory broker one request after another and
many at once, with the thread and the rows of every model call recorded."""

from __future__ import annotations

import asyncio
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
from worker import batcher as batching
from worker.batcher import Batcher
from worker.runtime import Parts, Runtime, create_runtime

Array = npt.NDArray[Any]
# harness.built traces the 4 -> 2 model with torch.jit.trace, which torch 2.13 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")


class Threads:
    """The runtime, recording which thread each batch ran on and how many requests it held."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.threads: list[int] = []
        self.requests: list[int] = []

    def predict_parts(self, parts: Parts) -> dict[str, Array]:
        self.threads.append(threading.get_ident())
        self.requests.append(len(next(iter(parts.values()))))
        return self.runtime.predict_parts(parts)


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    directory = tmp_path / TINY / "1"
    directory.mkdir(parents=True)
    BUILT[TINY](directory)
    return tmp_path


async def served(root: Path, model: str, width: int, calls: int, at_once: int = 0
                 ) -> tuple[list[bool], list[int]]:
    """Serve ``calls`` one-row requests one after another, then ``at_once`` together (all in
    before the batching loop runs again); per batch, whether it ran on the event loop's thread,
    and how many requests it held."""
    repository = ModelRepository(root)
    repository.scan()
    entry = repository.get(model)
    runtime = create_runtime(entry.config, entry.directory, Device.CPU)
    runtime.load()
    spy = Threads(runtime)
    broker = InMemoryBroker()
    config: ModelConfig = entry.config

    async def request() -> None:
        x = np.ones((1, width), np.float32)
        checked = config.signature.validate_request({"x": x}, None, max_rows=32, model=model)
        reply = await broker.request(PredictRequest(
            model=model, version=1, inputs={"x": x}, checked=checked,
            deadline=time.time() + 10))
        assert reply.error is None

    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(config, spy, executor, WorkerMetrics(CollectorRegistry()))  # type: ignore[arg-type]
        batcher.start()
        await broker.declare_queue(model, 1, 64)
        subscription = await broker.consume(config, batcher.submit, 64)
        for _ in range(calls):
            await request()
        await asyncio.gather(*(request() for _ in range(at_once)))
        await subscription.cancel()
        await batcher.drain(5)
    return [ident == threading.get_ident() for ident in spy.threads], spy.requests


async def test_a_fast_torchscript_model_moves_onto_the_event_loop(tiny_repo: Path) -> None:
    # Enough calls for the moving mean to forget a slow first few (TorchScript optimises the
    # graph on its early runs).
    on_loop, _ = await served(tiny_repo, TINY, 4, 200)
    assert not on_loop[0]  # nothing measured yet: its first batch goes to the thread
    assert any(on_loop[1:])  # 4 -> 2 takes microseconds: the hand-off would cost more


async def test_a_lone_batch_runs_on_the_event_loop_and_a_batch_under_load_on_its_thread(
        tiny_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a model slower than the hand-off but under INLINE_LONE_S: only the lone rule inlines.
    monkeypatch.setattr(batching, "INLINE_IN_S", 0.0)
    monkeypatch.setattr(batching, "INLINE_OUT_S", 0.0)
    monkeypatch.setattr(batching, "INLINE_LONE_S", 60.0)
    on_loop, requests = await served(tiny_repo, TINY, 4, 6, at_once=16)
    assert requests == [1] * 6 + [16]
    assert not on_loop[0]  # nothing measured yet
    assert all(on_loop[1:6])  # one at a time: nothing waits for the loop
    assert not on_loop[6]  # many: on the thread, the loop free for what comes next


async def test_a_lone_batch_of_a_model_slower_than_the_bound_stays_on_its_thread(
        tiny_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "INLINE_IN_S", 0.0)
    monkeypatch.setattr(batching, "INLINE_OUT_S", 0.0)
    monkeypatch.setattr(batching, "INLINE_LONE_S", 0.0)
    on_loop, _ = await served(tiny_repo, TINY, 4, 20)
    assert not any(on_loop)


async def test_a_python_model_always_runs_on_its_thread() -> None:
    on_loop, _ = await served(TEST_MODELS, "sum", 3, 20)
    assert not any(on_loop)


