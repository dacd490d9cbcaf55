"""``--symbolic-dim``: the size of every symbolic non-batch input dimension, so that one model
(echo16's ``[batch, n]``) sends requests of any size (the claim check's threshold sweep)."""

from __future__ import annotations

import numpy as np

from bench.cli import _parser
from bench.payload import SYMBOLIC_DIM, ModelInfo, TensorInfo, raw_tensors

ECHO = ModelInfo("echo16", 1, (TensorInfo("fp16", "float16", (-1, "n")),
                               TensorInfo("x", "float32", (-1, 3, "seq"))), 8)


def test_every_symbolic_dimension_takes_the_size_and_the_fixed_ones_stay() -> None:
    sized = ECHO.sized(4096)
    assert [t.shape for t in sized.inputs] == [(-1, 4096), (-1, 3, 4096)]
    tensors = raw_tensors(sized, rows=2, seed=0)
    assert [t.shape for t in tensors] == [(2, 4096), (2, 3, 4096)]
    assert len(tensors[0].raw) == 2 * 4096 * np.dtype(np.float16).itemsize


def test_the_default_is_the_payload_builders_own() -> None:
    assert _parser().parse_args([]).symbolic_dim == SYMBOLIC_DIM
