"""Models the bench builds for itself, in a temporary repository (``--model tiny``, ``--model
fixed``; ``--scaling`` uses ``fixed``); the tests build ``tiny`` the same way.

- ``tiny``: a 4 → 2 TorchScript ``Linear``. The model's own time is nothing, so what is measured
  is the serving path alone (HTTP, JSON, the queue hop).
- ``fixed``: a Python model that takes a fixed 20 ms per batch, whatever its size, in
  ``time.sleep`` (which releases the GIL, as a GPU kernel would), at most 4 rows per batch. One
  worker then serves at most 200 rows/s, so the throughput of N workers shows how well the queue
  spreads work over them (``--scaling``).

Neither is one of the sample models in models/: the bench writes the model, with its model.yaml,
to a temporary repository, passes that repository as ``--repo`` to every server it starts and to
the direct baseline, and deletes it afterwards.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["BUILT", "FIXED", "FIXED_BATCH_S", "TINY", "built_repo"]

TINY = "tiny"
FIXED = "fixed"
FIXED_BATCH_S = 0.020

TINY_YAML = f"""\
# Built by harness.built: a TorchScript Linear(4, 2), the serving path with no model time.
name: {TINY}
version: 1
format: torchscript
artifact: model.pt
signature:
  inputs:
    - {{name: x, dtype: float32, shape: [batch, 4]}}
  outputs:
    - {{name: y, dtype: float32, shape: [batch, 2]}}
batching:
  max_batch_size: 32
  max_batch_latency_ms: 5
concurrency:
  max_concurrency: 1
codecs:
  default: json
queue:
  max_length: 1024
"""

FIXED_YAML = f"""\
# Built by harness.built: {FIXED_BATCH_S * 1000:.0f} ms per batch of up to 4 rows, the GIL released
# (a stand-in for a GPU).
name: {FIXED}
version: 1
format: python
entrypoint: model:create
signature:
  inputs:
    - {{name: x, dtype: float32, shape: [batch, 4]}}
  outputs:
    - {{name: y, dtype: float32, shape: [batch, 4]}}
batching:
  max_batch_size: 4
  max_batch_latency_ms: 5
concurrency:
  max_concurrency: 1
queue:
  max_length: 4096
"""

FIXED_PY = f'''\
"""Built by harness.built: sleeps {FIXED_BATCH_S} s per batch (the GIL released), echoes x."""

import time


def create(context):
    def predict(inputs):
        time.sleep({FIXED_BATCH_S})
        return {{"y": inputs["x"]}}

    return predict
'''


def _write_tiny(directory: Path) -> None:
    import torch

    torch.manual_seed(4)
    module = torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.zeros(2, 4))
    module.save(str(directory / "model.pt"))
    (directory / "model.yaml").write_text(TINY_YAML)


def _write_fixed(directory: Path) -> None:
    (directory / "model.py").write_text(FIXED_PY)
    (directory / "model.yaml").write_text(FIXED_YAML)


BUILT: dict[str, Callable[[Path], None]] = {TINY: _write_tiny, FIXED: _write_fixed}
"""Name → writer of ``<name>/1/`` into the directory given."""


@contextlib.contextmanager
def built_repo(name: str) -> Iterator[str]:
    """A temporary model repository holding only the built model ``name``; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="inferno-bench-") as root:
        directory = Path(root) / name / "1"
        directory.mkdir(parents=True)
        BUILT[name](directory)
        yield root
