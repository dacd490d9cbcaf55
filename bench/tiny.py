"""``--model tiny``: a 4 → 2 TorchScript ``Linear`` that the bench builds for itself.

With a model this small, the model's own time is nothing and what is measured is the serving
path alone (HTTP, JSON, the queue hop). It is not one of the sample models in models/: the bench
writes it, with its model.yaml, to a temporary repository, passes that repository as ``--repo``
to every server it starts and to the direct baseline, and deletes it afterwards.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NAME", "tiny_repo"]

NAME = "tiny"

MODEL_YAML = f"""\
# Built by bench.tiny: a TorchScript Linear(4, 2), the serving path with no model time.
name: {NAME}
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


def write(repo: Path) -> Path:
    """Write ``tiny/1/{model.pt,model.yaml}`` under ``repo``; returns the version directory."""
    import torch

    torch.manual_seed(4)
    module = torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.zeros(2, 4))
    directory = repo / NAME / "1"
    directory.mkdir(parents=True)
    module.save(str(directory / "model.pt"))
    (directory / "model.yaml").write_text(MODEL_YAML)
    return directory


@contextlib.contextmanager
def tiny_repo() -> Iterator[str]:
    """A temporary model repository holding only ``tiny``; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="inferno-bench-") as root:
        write(Path(root))
        yield root
