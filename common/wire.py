"""The messages that cross the facade→worker hop, as declared types (never tuples or pickle).

The in-process broker hands these objects over as they are; the AMQP broker encodes them with the
framing of docs/queue-protocol.md. Queue and routing-key names are built here, in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from common.errors import InfernoError

__all__ = ["PredictReply", "PredictRequest", "queue_name", "routing_key"]

Array = npt.NDArray[Any]

def routing_key(model: str, version: int) -> str:
    """The pinned routing key of one model version."""
    return f"{model}.v{version}"

def queue_name(model: str, version: int) -> str:
    return f"inferno.{model}.v{version}"

@dataclass(slots=True)
class PredictRequest:
    """One validated predict call for one model version."""

    model: str
    version: int
    inputs: dict[str, Array]
    deadline: float
    """Epoch seconds after which nobody waits for the answer any more."""
    outputs: list[str] | None = None
    """Outputs to return; ``None`` for all of them."""
    request_id: str = ""
    rows: int = 0
    """Rows along the batch dimension, set by validation; 0 means not validated yet (never read
    from the wire: the worker validates what a producer sent)."""
    published: float = 0.0
    """Epoch seconds when the facade published it (queue-wait metric)."""

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)

@dataclass(slots=True)
class PredictReply:
    """Either the outputs of one request or the error that ended it."""

    outputs: dict[str, Array] = field(default_factory=dict)
    error: InfernoError | None = None

    def result(self) -> dict[str, Array]:
        """The outputs, or the error raised again on the caller's side."""
        if self.error is not None:
            raise self.error
        return self.outputs
