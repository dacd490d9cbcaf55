"""The control-plane contract: which versions are active and loaded, and which workers live.

The state store is the shared truth every replica converges to. ``InMemoryStateStore`` serves one
process (embedded mode); the Redis store serves a cluster. Both publish a ``StateEvent`` on every
change, so facades and workers react at once; polling is only the fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["RESYNC", "EventKind", "ModelState", "StateEvent", "StateStore", "WorkerInfo"]


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the cluster should serve of one model."""

    name: str
    active: int | None = None
    """Version that unpinned requests (and the queue alias) go to."""
    desired: frozenset[int] = frozenset()
    """Versions that should be loaded somewhere."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's heartbeat: who it is and what it serves right now."""

    worker_id: str
    host: str
    device: str
    loaded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Model name → versions loaded and consuming."""
    capacity: int = 1
    """Batches it can run at once across its models."""
    started_at: float = 0.0
    failed: dict[str, tuple[float, str]] = field(default_factory=dict)
    """``name:version`` → (epoch of the attempt, why it could not be loaded)."""
    batches: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    """Model name → (batches run, rows in them) since the worker started: cumulative, so a
    reader turns two heartbeats into a mean batch size. Not compared: a heartbeat whose only
    news is its counters renews the lease without a change event."""

    def serves(self, model: str, version: int) -> bool:
        return version in self.loaded.get(model, ())

    def to_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "host": self.host, "device": self.device,
                "loaded": {m: list(v) for m, v in self.loaded.items()},
                "capacity": self.capacity, "started_at": self.started_at,
                "failed": {k: list(v) for k, v in self.failed.items()},
                "batches": {m: list(v) for m, v in self.batches.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerInfo:
        return cls(worker_id=data["worker_id"], host=data["host"], device=data["device"],
                   loaded={m: tuple(v) for m, v in data["loaded"].items()},
                   capacity=data["capacity"], started_at=data["started_at"],
                   failed={k: (v[0], v[1]) for k, v in data.get("failed", {}).items()},
                   batches={m: (v[0], v[1]) for m, v in data.get("batches", {}).items()})


class EventKind(StrEnum):
    MODEL = "model"
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class StateEvent:
    kind: EventKind
    name: str
    """Model name or worker id."""


RESYNC = StateEvent(EventKind.MODEL, "")
"""Anything may have changed: re-read the whole state."""


class StateStore(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def models(self) -> dict[str, ModelState]: ...

    @abstractmethod
    async def init_model(self, name: str, version: int) -> ModelState:
        """Make ``version`` active and desired unless the model already has state."""

    @abstractmethod
    async def set_active(self, name: str, version: int) -> ModelState:
        """Make ``version`` active (and desired)."""

    @abstractmethod
    async def set_desired(self, name: str, version: int, loaded: bool) -> ModelState:
        """Add ``version`` to the versions to load, or remove it (and clear it if active)."""

    @abstractmethod
    async def put_worker(self, info: WorkerInfo, ttl_s: float, announce: bool = True) -> None:
        """Heartbeat: the worker is alive for ``ttl_s`` more seconds. ``announce`` publishes a
        change event: a heartbeat that says nothing new only renews the lease, so that facades
        do not re-read the state every time a worker beats (expiries they see by polling)."""

    @abstractmethod
    async def remove_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    async def workers(self) -> list[WorkerInfo]:
        """Live workers only."""

    @abstractmethod
    def events(self) -> AsyncIterator[StateEvent]:
        """Change events until the store closes. A store that subscribes asynchronously sends
        ``RESYNC`` once subscribed (and after every re-subscription): nothing after it is missed.
        """
