"""The direct baseline: the model's TorchScript artifact called in this process, no server.

It is the limit the serving path is compared with: the same artifact, the same torch thread count
as the server (``WorkerSettings.intra_op_threads``), under ``torch.inference_mode``,
at the batch sizes the server actually formed. It must run while no server competes for the CPU:
the CLI runs it after the server has stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SLICES", "DirectResult", "measure"]

SLICES = 4
"""Each batch size runs as this many equal slices and reports the fastest: the limit is what the
model can do, and on a shared machine a slice that another process interrupted says nothing
about that. (With 2 intra-op threads on 2 cores, one busy neighbour can slow torch ~10x.)"""


@dataclass(frozen=True, slots=True)
class DirectResult:
    batch: int
    calls_per_s: float
    rows_per_s: float
    threads: int
    device: str


def measure(repo: Path, name: str, version: int | None, batches: Iterable[int],
            duration_s: float) -> list[DirectResult]:
    """Calls/s and rows/s at each batch size: the best of ``SLICES`` slices of ``duration_s``.

    Raises ``ValueError`` for a model that is not TorchScript (a Python model has no artifact).
    """
    import numpy as np
    import torch

    from bench.payload import example_array
    from common.config import WorkerSettings
    from common.model.config import ModelFormat
    from common.model.repository import ModelRepository
    from worker.runtime import resolve_device

    entry = ModelRepository(repo).get(name, version)
    config = entry.config
    if config.format is not ModelFormat.TORCHSCRIPT or config.artifact is None:
        raise ValueError(f"model '{name}' is {config.format.value}, not torchscript")
    settings = WorkerSettings()
    torch.set_num_threads(settings.intra_op_threads)
    device = resolve_device(config.device or settings.device)
    module = torch.jit.load(str(entry.directory / config.artifact), map_location=device)
    module.eval()
    rng = np.random.default_rng(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    results = []
    with torch.inference_mode():
        for batch in batches:
            args: list[Any] = [
                torch.from_numpy(example_array(s.dtype.value, s.shape, batch, rng))
                .to(device=device, dtype=getattr(torch, s.dtype.value))
                for s in config.signature.inputs]
            for _ in range(5):
                module(*args)
            sync()
            best = 0.0
            for _ in range(SLICES):
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < duration_s / SLICES:
                    module(*args)
                    calls += 1
                sync()
                best = max(best, calls / (time.perf_counter() - started))
            results.append(DirectResult(batch=batch, calls_per_s=best, rows_per_s=best * batch,
                                        threads=torch.get_num_threads(), device=str(device)))
    return results
