"""Host staging of a batch's tensors on their way to an accelerator and back.

On CUDA a batch crosses the bus twice: its inputs to the device, its outputs back. Both copies
are asynchronous only from page-locked (pinned) host memory, and pinning is expensive, so:

- **Inputs**: each batch in flight leases a ``HostStaging``, whose buffers (one per input, pinned
  on CUDA) are reused across batches: grown to the largest batch seen (warm-up runs the largest
  one, ``DeviceTransfer.provision`` sizes every runner's slot like it), a smaller batch uses a
  view of their first elements. A batch's rows are copied into the buffer once, then one
  non-blocking host-to-device copy per input.
- **Outputs**: one non-blocking device-to-host copy per output, into pinned memory, and one
  stream synchronisation for the whole batch. Output memory is *not* one of our reused buffers:
  the replies are views of it and live until they are sent, after the next batch has run. It
  comes from torch's caching host allocator, which gets the block back when the reply arrays
  are freed (and, from an asynchronous copy, only once that copy's event has completed).
- **Concurrency**: a runner slot (``max_concurrency``) runs one batch at a time on its thread;
  each batch in flight holds its own lease, so no buffer is written while an earlier copy from it
  may still be in flight. A lease goes back only after its stream is synchronised, on the error
  path too. On CUDA each lease has its own stream, so concurrent batches overlap their copies.

Nothing here is CUDA-only: with ``pin=False`` on the CPU the same code runs (the device copy is
then a real CPU copy), which is how the unit tests check reuse, growth and copy counts. The
runtime uses it on CUDA only; on the CPU a batch stays zero-copy (numpy memory as the tensor).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["DeviceTransfer", "HostStaging", "StagedBatch", "TransferStats", "stageable"]

Array = npt.NDArray[Any]


def stageable(array: Array) -> bool:
    """Whether the array can go through a host buffer: numbers or booleans in native order (a
    string tensor, for one, cannot)."""
    return array.dtype.kind in "biuf" and array.dtype.isnative


@dataclass(slots=True)
class TransferStats:
    """Copies made so far (every lease together): what the tests count. Plain increments, not
    locked: exact for batches one at a time, approximate while several run at once."""

    host_copies: int = 0
    """Rows copied into a staging buffer: one per input per batch."""
    to_device: int = 0
    """Host-to-device copies: one per input per batch."""
    to_host: int = 0
    """Device-to-host copies: one per output per batch."""
    synchronizations: int = 0
    """Stream synchronisations: one per batch."""


class HostStaging:
    """The input buffers of one batch in flight, reused by the batches that lease it after.

    One flat buffer per input name, grown (never shrunk) to the largest size asked for; a batch
    gets a view of its first elements in its shape.
    """

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.allocations = 0
        """Buffers allocated so far (a growth is one)."""
        self._buffers: dict[str, torch.Tensor] = {}

    def gather(self, name: str, parts: Sequence[Array]) -> torch.Tensor:
        """``parts`` concatenated along the batch dimension into this name's buffer (one host
        copy, straight into it): a view of the buffer, valid until the next ``gather`` of
        ``name``. The parts share a dtype and their non-batch dimensions."""
        first = parts[0]
        if len(parts) == 1:
            shape = first.shape
        else:
            shape = (sum(p.shape[0] for p in parts), *first.shape[1:])
        host = self._buffer(name, first.dtype, math.prod(shape)).view(shape)
        out = host.numpy()
        if len(parts) == 1:
            np.copyto(out, first, casting="no")
        else:
            np.concatenate(parts, out=out, casting="no")
        return host

    def capacity(self, name: str) -> int:
        """Elements the buffer of ``name`` holds (0: none yet)."""
        buffer = self._buffers.get(name)
        return 0 if buffer is None else buffer.numel()

    def buffer(self, name: str) -> torch.Tensor:
        """The whole (flat) buffer of ``name``: the same tensor across batches until it grows."""
        return self._buffers[name]

    def reserve(self, sizes: dict[str, tuple[torch.dtype, int]]) -> None:
        """Buffers of at least these sizes (elements), allocated now rather than mid-batch."""
        for name, (dtype, numel) in sizes.items():
            self._grow(name, dtype, numel)

    def sizes(self) -> dict[str, tuple[torch.dtype, int]]:
        return {name: (b.dtype, b.numel()) for name, b in self._buffers.items()}

    def clear(self) -> None:
        self._buffers.clear()

    def _buffer(self, name: str, dtype: np.dtype[Any], numel: int) -> torch.Tensor:
        wanted = _torch_dtype(dtype)
        return self._grow(name, wanted, numel)[:numel]

    def _grow(self, name: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
            # Exactly the size asked for: the largest batch seen, i.e. max_batch_size after
            # warm-up; a longer sequence dimension grows it once more.
            buffer = torch.empty(numel, dtype=dtype, pin_memory=self.pin)
            self._buffers[name] = buffer
            self.allocations += 1
        return buffer


class StagedBatch:
    """One batch's way to the device and back, under its lease (see ``DeviceTransfer.batch``)."""

    def __init__(self, transfer: DeviceTransfer, staging: HostStaging,
                 stream: torch.cuda.Stream | None) -> None:
        self._transfer = transfer
        self.staging = staging
        self._stream = stream
        self._synchronized = False

    def to_device(self, name: str, parts: Sequence[Array]) -> torch.Tensor:
        """The rows of ``parts`` on the device: one host copy into the staging buffer, one
        non-blocking copy from it (``copy=True``: on the CPU too the model gets its own tensor,
        never the buffer the next batch overwrites)."""
        host = self.staging.gather(name, parts)
        stats = self._transfer.stats
        stats.host_copies += 1
        stats.to_device += 1
        return host.to(self._transfer.device, non_blocking=self.staging.pin, copy=True)

    def to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host copy of a device tensor, started now: read it only after ``synchronize``."""
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=self.staging.pin)
        host.copy_(tensor, non_blocking=self.staging.pin)
        self._transfer.stats.to_host += 1
        return host

    def synchronize(self) -> None:
        """Wait for every copy and kernel of this batch (once; again is a no-op)."""
        if self._synchronized:
            return
        self._synchronized = True
        self._transfer.stats.synchronizations += 1
        if self._stream is not None:
            self._stream.synchronize()


class DeviceTransfer:
    """Leases of host staging for the batches of one model version on one device.

    A lease is taken per batch (``batch()``) and given back once that batch's stream is
    synchronised; there are as many ``HostStaging`` as batches were ever in flight at once
    (``max_concurrency``), each with its own CUDA stream. The constructor allocates nothing.
    """

    def __init__(self, device: torch.device, pin: bool | None = None) -> None:
        self.device = device
        self.pin = device.type == "cuda" if pin is None else pin
        """Page-locked buffers: on CUDA only (on the CPU pinning buys nothing)."""
        self.stats = TransferStats()
        self._free: list[tuple[HostStaging, torch.cuda.Stream | None]] = []
        self._slots = 0
        self._lock = threading.Lock()

    @property
    def slots(self) -> int:
        """Stagings created so far: the most batches that were in flight at once."""
        return self._slots

    @contextlib.contextmanager
    def batch(self) -> Iterator[StagedBatch]:
        """A lease for one batch; on CUDA the batch's work runs on the lease's stream."""
        staging, stream = self._take()
        staged = StagedBatch(self, staging, stream)
        try:
            if stream is None:
                yield staged
            else:
                # Whatever was queued on the current stream (a load, say) comes first.
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    yield staged
        finally:
            # On the error path too: a copy from a buffer may still be in flight, and the
            # next lease of this staging writes to it.
            staged.synchronize()
            with self._lock:
                self._free.append((staging, stream))

    def provision(self, slots: int) -> None:
        """At least ``slots`` stagings, each with buffers as large as the largest one has
        (after a warm-up at the largest batch: every runner can take a full batch at once
        without allocating)."""
        with self._lock:
            sizes: dict[str, tuple[torch.dtype, int]] = {}
            for staging, _ in self._free:
                for name, (dtype, numel) in staging.sizes().items():
                    if numel > sizes.get(name, (dtype, 0))[1]:
                        sizes[name] = (dtype, numel)
            while self._slots < slots:
                self._free.append(self._new())
            for staging, _ in self._free:
                staging.reserve(sizes)

    def clear(self) -> None:
        """Drop the idle stagings' buffers (on unload)."""
        with self._lock:
            for staging, _ in self._free:
                staging.clear()

    def _take(self) -> tuple[HostStaging, torch.cuda.Stream | None]:
        with self._lock:
            if self._free:
                return self._free.pop()
            return self._new()

    def _new(self) -> tuple[HostStaging, torch.cuda.Stream | None]:
        self._slots += 1
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        return HostStaging(self.pin), stream


def _torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype
