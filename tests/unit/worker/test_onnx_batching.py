"""The batcher over the onnx runtime (tests/unit/conftest.py's harness, its repository here an
exported ``Scorer``): requests share batches and get their own rows back, the batch metrics are
observed, and a request that expires while waiting is never computed, as with TorchScript."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from common.errors import DeadlineExceeded
from common.model.repository import ModelRepository
from tests.onnx_models import scorer_inputs, scorer_outputs, write_scorer
from tests.unit.conftest import MakeBatcher

pytest.importorskip("onnxruntime")


@pytest.fixture
def test_repository(tmp_path: Path) -> ModelRepository:
    """Overrides tests/unit/conftest.py's: the harness's models are the scorer alone."""
    write_scorer(tmp_path)
    repository = ModelRepository(tmp_path)
    repository.scan()
    return repository


async def test_requests_held_behind_a_batch_share_the_next_and_keep_their_rows(
        make_batcher: MakeBatcher) -> None:
    h = await make_batcher("scorer", max_batch_size=16)
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer(scorer_inputs(1, seed=100)))
    await asyncio.wait_for(h.probe.started.get(), 5)  # the only slot is held
    sizes = [1 + i % 3 for i in range(6)]
    waiting = [asyncio.create_task(h.infer(scorer_inputs(rows, seed)))
               for seed, rows in enumerate(sizes)]
    await h.wait_delivered(1 + len(sizes))
    h.probe.gate.set()

    outputs = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    for seed, (rows, got) in enumerate(zip(sizes, outputs, strict=True)):
        want = scorer_outputs(rows, seed)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_array_equal((await first)["label"], scorer_outputs(1, 100)["label"])
    assert h.probe.batch_sizes == [1, sum(sizes)]
    assert h.metric("infer_batch_size_count") == 2
    assert h.metric("infer_batch_size_sum") == 1 + sum(sizes)


async def test_a_request_that_expires_while_waiting_is_never_computed(
        make_batcher: MakeBatcher) -> None:
    h = await make_batcher("scorer")
    h.probe.gate.clear()
    first = asyncio.create_task(h.infer(scorer_inputs(1)))
    await asyncio.wait_for(h.probe.started.get(), 5)

    stale = scorer_inputs(1, seed=7)
    stale["x"][:] = -99.0
    with pytest.raises(DeadlineExceeded):
        await h.infer(stale, timeout=0.05)
    h.probe.gate.set()

    np.testing.assert_array_equal((await first)["label"], scorer_outputs(1)["label"])
    np.testing.assert_array_equal((await h.infer(scorer_inputs(2)))["label"],
                                  scorer_outputs(2)["label"])
    assert h.probe.batch_sizes == [1, 2]
    assert all((call["x"] != -99.0).all() for call in h.probe.calls), "expired request was run"
    assert h.metric("infer_expired_total") == 1
