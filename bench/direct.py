"""The direct baseline: the model called in this process, no server.

It is the limit the serving path is compared with: the same model, the same torch thread count
as the server (``WorkerSettings.intra_op_threads``), under ``torch.inference_mode``,
at the batch sizes the server actually formed. A TorchScript model is its artifact called with
tensors; a Python model (``minilm``: string inputs) is the worker's own runtime
(``worker.runtime``) loaded here and called with numpy batches, so it pays what the worker's
model call pays (the entrypoint, the conversions) and nothing else. It must run while no server
competes for the CPU: the CLI runs it after the server has stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SLICES", "DirectResult", "measure", "time_calls"]

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
    """Calls/s and rows/s at each batch size: the best of ``SLICES`` slices of ``duration_s``."""
    import numpy as np
    import torch

    from bench.payload import example_array
    from common.model.config import ModelFormat
    from common.model.repository import ModelRepository
    from common.settings import WorkerSettings
    from worker.runtime import create_runtime, resolve_device

    entry = ModelRepository(repo).get(name, version)
    config = entry.config
    settings = WorkerSettings()
    torch.set_num_threads(settings.intra_op_threads)
    device = resolve_device(config.device or settings.device)
    rng = np.random.default_rng(0)
    call: Callable[[int], Callable[[], object]]
    if config.format is ModelFormat.TORCHSCRIPT and config.artifact is not None:
        module = torch.jit.load(str(entry.directory / config.artifact), map_location=device)
        module.eval()

        def call(batch: int) -> Callable[[], object]:
            args: list[Any] = [
                torch.from_numpy(example_array(s.dtype.value, s.shape, batch, rng))
                .to(device=device, dtype=getattr(torch, s.dtype.value))
                for s in config.signature.inputs]
            return lambda: module(*args)
    else:
        runtime = create_runtime(config, entry.directory, settings.device)
        runtime.load()

        def call(batch: int) -> Callable[[], object]:
            inputs = {s.name: example_array(s.dtype.value, s.shape, batch, rng)
                      for s in config.signature.inputs}
            return lambda: runtime.predict(inputs)

    return time_calls(call, batches, duration_s, device)


def time_calls(call: Callable[[int], Callable[[], object]], batches: Iterable[int],
               duration_s: float, device: Any) -> list[DirectResult]:
    """``call(batch)``'s callable timed at each batch size under ``torch.inference_mode``:
    the best of ``SLICES`` slices of ``duration_s`` (a CUDA ``device`` synchronised)."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    results = []
    with torch.inference_mode():
        for batch in batches:
            once = call(batch)
            for _ in range(5):
                once()
            sync()
            best = 0.0
            for _ in range(SLICES):
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < duration_s / SLICES:
                    once()
                    calls += 1
                sync()
                best = max(best, calls / (time.perf_counter() - started))
            results.append(DirectResult(batch=batch, calls_per_s=best, rows_per_s=best * batch,
                                        threads=torch.get_num_threads(), device=str(device)))
    return results
