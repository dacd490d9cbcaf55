"""Triton's system shared memory extension: the facade's registry of regions under ``/dev/shm``.

A client on the facade's host creates a POSIX shared memory object (``shm_open``: the file
``/dev/shm/<name>``), registers part of it as a named region (``register``) and then names the
region in an infer request instead of sending tensor bytes: an input's ``shared_memory_region``,
``shared_memory_byte_size`` and ``shared_memory_offset`` parameters say where its bytes lie, a
requested output's say where to write it. ``RegionRef`` is such a place, read from either
protocol's parameters by ``region_ref``.

- One ``SharedMemoryRegistry`` per facade process (``INFERNO_SHARED_MEMORY=system``; off, every
  call is refused with ``OFF``). Used from the event loop only, so nothing is locked.
- Keys are a single POSIX name: one leading ``/``, then letters, digits, ``_``, ``.`` and ``-``
  (no other ``/``, no ``..``), opened with ``O_NOFOLLOW`` as a regular file under ``/dev/shm``:
  nothing outside it is ever mapped.
- Every offset and size is checked against its region (and the region against its file, whose
  size is read again before each access: a file shrunk under a mapping would fault) and refused
  with a 400 naming the region and the numbers, never read or written outside it.
- An input's bytes are copied out of the region when its request is decoded, so no array of a
  request ever points into a mapping: the client may rewrite its region as soon as the call
  returns, and ``unregister`` (or ``close`` at shutdown) unmaps at once, whatever is in flight.
  An output is written when its request is encoded, after every output of the request has been
  checked to fit, into the region registered under its name at that moment.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from common.errors import InvalidInput
from common.model.codecs import array_from_raw, is_count, raw_of
from common.model.dtypes import DType
from facade.errors import HttpError

__all__ = ["OFF", "ROOT", "RegionRef", "SharedMemoryRegistry", "region_ref"]

Array = npt.NDArray[Any]
ROOT = Path("/dev/shm")
"""Where POSIX shared memory objects live (Linux's tmpfs)."""
_KEY = re.compile(r"/[A-Za-z0-9_.-]{1,255}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_REGION = "shared_memory_region"
_BYTE_SIZE = "shared_memory_byte_size"
_OFFSET = "shared_memory_offset"
_OFF = ("System shared memory is off: set INFERNO_SHARED_MEMORY=system to turn it on (for "
        "clients on the facade's host)")


@dataclass(frozen=True, slots=True)
class RegionRef:
    """Where a tensor lies in a registered region: a request's ``shared_memory_*`` parameters."""

    region: str
    byte_size: int
    offset: int = 0

    def answered(self, written: int) -> dict[str, str | int]:
        """An output's parameters in the response once ``written`` bytes went into the region."""
        return {_REGION: self.region, _BYTE_SIZE: written}


def region_ref(label: str, parameters: Mapping[str, Any]) -> RegionRef | None:
    """The region a tensor's parameters name (``None``: none, its data comes in the request);
    ``InvalidInput`` for ``label`` (``"Input 'x'"``) when they are not a region, a byte size and
    an optional offset."""
    region = parameters.get(_REGION)
    if region is None:
        return None
    byte_size, offset = parameters.get(_BYTE_SIZE), parameters.get(_OFFSET, 0)
    if not isinstance(region, str):
        raise InvalidInput(f"{label}: {_REGION} must be a string")
    if not is_count(byte_size):
        raise InvalidInput(f"{label}: {_REGION} needs {_BYTE_SIZE}, a non-negative integer")
    if not is_count(offset):
        raise InvalidInput(f"{label}: {_OFFSET} must be a non-negative integer")
    return RegionRef(region, byte_size, offset)


@dataclass(slots=True)
class _Region:
    name: str
    key: str
    offset: int
    """Where the region starts in its file."""
    byte_size: int
    mapped: mmap.mmap
    """The file's pages from ``offset`` rounded down to a page, to the region's end."""

    def start(self, label: str, ref: RegionRef) -> int:
        """Where ``ref`` begins in ``mapped``, once checked to lie within the region and the
        region within its file."""
        if ref.offset + ref.byte_size > self.byte_size:
            raise InvalidInput(
                f"{label}: offset {ref.offset} and byte size {ref.byte_size} reach past the end "
                f"of shared memory region '{self.name}' ({self.byte_size} bytes)")
        end = self.offset + self.byte_size
        if self.mapped.size() < end:  # shrunk since: reading past the file's end would fault
            raise InvalidInput(f"{label}: shared memory region '{self.name}' ends at byte {end} "
                               f"of '{self.key}', now {self.mapped.size()} bytes long")
        return len(self.mapped) - self.byte_size + ref.offset


class SharedMemoryRegistry:
    """The registered regions of one facade process; see the module docstring."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._regions: dict[str, _Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the object ``key`` as region ``name``."""
        self._check_on()
        if not _NAME.fullmatch(name):
            raise InvalidInput(f"shared memory region name {name[:80]!r}: 1-128 letters, digits, "
                               f"'_', '.' or '-'")
        if name in self._regions:
            raise InvalidInput(f"shared memory region '{name}' already in manager")
        if not _KEY.fullmatch(key) or ".." in key:
            raise InvalidInput(f"shared memory key {key[:80]!r} is not a POSIX shared memory "
                               f"name: '/' then 1-255 letters, digits, '_', '.' or '-', no '..'")
        if not is_count(offset) or not is_count(byte_size) or byte_size == 0:
            raise InvalidInput(f"shared memory region '{name}': offset must be a non-negative "
                               f"integer and byte_size a positive one")
        self._regions[name] = _Region(name, key, offset, byte_size, _map(key, offset, byte_size))

    def status(self, name: str = "") -> list[dict[str, str | int]]:
        """Every region (``name`` empty) or the one named, as Triton describes them."""
        self._check_on()
        if name and name not in self._regions:
            raise HttpError(404, f"Unable to find system shared memory region: '{name}'")
        return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in self._regions.values() if not name or r.name == name]

    def unregister(self, name: str = "") -> None:
        """Unmap the region named (none of that name: nothing to do, as in Triton), or every
        region when ``name`` is empty."""
        self._check_on()
        for region in [r for r in self._regions.values() if not name or r.name == name]:
            del self._regions[region.name]
            region.mapped.close()

    def read_input(self, name: str, ref: RegionRef, dtype: DType, shape: list[int]) -> Array:
        """Input ``name``'s array, from ``ref.byte_size`` bytes of its region, copied (the
        region's bytes are the client's again once this returns)."""
        label = f"Input '{name}'"
        region = self._region(label, ref)
        start = region.start(label, ref)
        return array_from_raw(name, region.mapped[start:start + ref.byte_size],  # a copy
                              dtype, shape)

    def check_output(self, name: str, ref: RegionRef) -> None:
        """Refuse, before anything runs, an output whose place is not within a region."""
        label = f"Output '{name}'"
        self._region(label, ref).start(label, ref)

    def write_outputs(self, places: Mapping[str, RegionRef], outputs: Mapping[str, Array],
                      dtypes: Mapping[str, DType]) -> dict[str, int]:
        """Write each output ``places`` names into its region; the bytes each took. Every one is
        checked to fit before any is written."""
        writes = []
        for name, ref in places.items():
            label = f"Output '{name}'"
            region = self._region(label, ref)
            data = raw_of(outputs[name], dtypes[name], f"output '{name}'")
            if len(data) > ref.byte_size:  # Triton's words
                raise InvalidInput(
                    f"shared memory size specified with the request for output '{name}' "
                    f"({ref.byte_size} bytes) should be at least {len(data)} bytes to hold the "
                    f"results")
            writes.append((name, region, region.start(label, ref), data))
        for _, region, start, data in writes:
            region.mapped[start:start + len(data)] = data
        return {name: len(data) for name, _, _, data in writes}

    def close(self) -> None:
        """Unmap every region (the facade's shutdown)."""
        for region in self._regions.values():
            region.mapped.close()
        self._regions.clear()

    def _region(self, label: str, ref: RegionRef) -> _Region:
        self._check_on()
        region = self._regions.get(ref.region)
        if region is None:
            raise InvalidInput(f"{label}: Unable to find shared memory region: '{ref.region}'")
        return region

    def _check_on(self) -> None:
        if not self.enabled:
            raise InvalidInput(_OFF)


OFF = SharedMemoryRegistry(enabled=False)
"""The registry of a facade without shared memory: it refuses every call."""


def _map(key: str, offset: int, byte_size: int) -> mmap.mmap:
    """The pages of ``/dev/shm/<key>`` that hold ``byte_size`` bytes at ``offset``."""
    path = ROOT / key[1:]
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # absent, a symbolic link, not ours to write
        raise InvalidInput(f"Unable to open shared memory key '{key}': {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"shared memory key '{key}' is not a shared memory object")
        if offset + byte_size > info.st_size:
            raise InvalidInput(f"shared memory key '{key}' holds {info.st_size} bytes: offset "
                               f"{offset} and byte size {byte_size} reach past its end")
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap maps whole pages
        return mmap.mmap(fd, offset + byte_size - start, offset=start)  # it keeps its own fd
    finally:
        os.close(fd)
