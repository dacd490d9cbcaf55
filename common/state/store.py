"""The control-plane contract: which versions are active and loaded, and which workers live.

The state store is the shared truth every replica converges to. ``InMemoryStateStore`` serves one
process (embedded mode); the Redis store serves a cluster. Both publish a ``StateEvent`` on every
change, so facades and workers react at once; polling is only the fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from common.state.statistics import StatisticsReport

__all__ = ["RESYNC", "EventKind", "ModelState", "StateEvent", "StateStore", "WorkerInfo"]


@dataclass(frozen=True, slots=True)
class ModelState:
    """What the cluster should serve of one model."""

    name: str
    active: int | None = None
    """Version that unpinned requests (and the queue alias) go to."""
    desired: frozenset[int] = frozenset()
    """Versions that should be loaded somewhere."""
    overrides: dict[int, str] = field(default_factory=dict, hash=False)
    """Desired version → the configuration it loads with instead of its model.yaml's: the JSON
    of a model.yaml fragment (``ModelConfig.with_override``). A version without one loads its
    model.yaml as it is."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's heartbeat: who it is and what it serves right now."""

    worker_id: str
    host: str
    device: str
    loaded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Model name → versions loaded and consuming."""
    overrides: dict[str, str] = field(default_factory=dict)
    """``name:version`` → the override (``ModelState.overrides``) the loaded version runs with;
    absent: its model.yaml as it is."""
    capacity: int = 1
    """Batches it can run at once across its models."""
    started_at: float = 0.0
    failed: dict[str, tuple[float, str]] = field(default_factory=dict)
    """``name:version`` → (epoch of the attempt, why it could not be loaded)."""
    statistics: StatisticsReport = field(default_factory=StatisticsReport, compare=False)
    """Triton's statistics of every version it ran since it started (cumulative, so a reader
    turns two heartbeats into rates). Not compared: a heartbeat whose only news is its counters
    renews the lease without a change event."""

    def serves(self, model: str, version: int) -> bool:
        return version in self.loaded.get(model, ())

    def to_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "host": self.host, "device": self.device,
                "loaded": {m: list(v) for m, v in self.loaded.items()},
                "overrides": self.overrides,
                "capacity": self.capacity, "started_at": self.started_at,
                "failed": {k: list(v) for k, v in self.failed.items()},
                "statistics": self.statistics.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerInfo:
        return cls(worker_id=data["worker_id"], host=data["host"], device=data["device"],
                   loaded={m: tuple(v) for m, v in data["loaded"].items()},
                   overrides=dict(data.get("overrides", {})),
                   capacity=data["capacity"], started_at=data["started_at"],
                   failed={k: (v[0], v[1]) for k, v in data.get("failed", {}).items()},
                   statistics=StatisticsReport.from_dict(data["statistics"])
                   if "statistics" in data else StatisticsReport())


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
    async def set_desired(self, name: str, version: int, loaded: bool,
                          override: str | None = None) -> ModelState:
        """Add ``version`` to the versions to load, or remove it (and clear it if active, and
        its override). A load with ``override`` sets the version's (``""`` clears it); without,
        it keeps the one it has."""

    @abstractmethod
    async def put_version_files(self, name: str, version: int,
                                files: Mapping[str, bytes]) -> None:
        """Keep the files of a version written by a load (its path under the version
        directory → bytes), for replicas whose repository lacks it
        (``common.model.shared_versions``)."""

    @abstractmethod
    async def version_files(self, name: str, version: int) -> dict[str, bytes] | None:
        """The files ``put_version_files`` kept for the version; ``None``: none."""

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
