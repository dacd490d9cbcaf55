"""The control plane: the ``StateStore`` contract (active and desired versions, worker
heartbeats, change events) with its in-memory implementation; the Redis one is
``common.state.redis_store`` (imported only where a Redis URL is configured)."""

from common.state.memory import InMemoryStateStore
from common.state.store import RESYNC, EventKind, ModelState, StateEvent, StateStore, WorkerInfo

__all__ = ["RESYNC", "EventKind", "InMemoryStateStore", "ModelState", "StateEvent",
           "StateStore", "WorkerInfo"]
