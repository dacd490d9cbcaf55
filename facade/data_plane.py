"""The one predict core every protocol adapter (v1, v2) calls: validate, publish, await the reply.

Adapters parse their protocol into numpy arrays (checking input names against the signature first,
before decoding any data) and encode what comes back; everything in between happens here.

The request's deadline is enforced in three places: here (the wait on the broker is bounded by
it), in the message (the broker drops it when it expires in the queue) and in the worker (expired
requests are dropped before a batch runs).
"""

from __future__ import annotations

import time
from typing import Any

import numpy.typing as npt
from prometheus_client import Counter, Histogram

from common.config import FacadeSettings
from common.errors import InfernoError, InvalidInput
from common.metrics import FacadeMetrics
from common.model.config import ModelConfig
from common.model.repository import ModelEntry
from common.transport.broker import Broker
from common.wire.messages import PredictRequest
from facade.cluster_view import ClusterView

__all__ = ["PredictService"]

Array = npt.NDArray[Any]


class PredictService:
    def __init__(self, settings: FacadeSettings, broker: Broker, view: ClusterView,
                 metrics: FacadeMetrics) -> None:
        self._settings = settings
        self._broker = broker
        self._view = view
        self._metrics = metrics
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def resolve(self, name: str, version: int | None) -> ModelEntry:
        return self._view.route(name, version)

    def deadline_s(self, config: ModelConfig, timeout_ms: Any) -> float:
        """Seconds this request may take: its own ask, else the model's, else the default."""
        if timeout_ms is None:
            timeout_ms = config.timeout_ms or self._settings.request_timeout_ms
        elif (not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool)
              or timeout_ms <= 0):
            raise InvalidInput("'timeout_ms' must be a positive number")
        return min(float(timeout_ms), self._settings.max_request_timeout_ms) / 1000

    async def infer(self, config: ModelConfig, inputs: dict[str, Array],
                    outputs: list[str] | None, timeout_s: float,
                    request_id: str | None = None) -> dict[str, Array]:
        """Check dtypes and shapes, queue the request and return the requested outputs."""
        signature = config.signature
        selected = signature.check_outputs(outputs)
        rows = signature.check_inputs(inputs)
        if rows > config.batching.max_batch_size:
            raise InvalidInput(f"Batch of {rows} rows exceeds max_batch_size "
                               f"{config.batching.max_batch_size} of model '{config.name}'")
        now = time.time()
        request = PredictRequest(
            model=config.name, version=config.version, inputs=inputs, deadline=now + timeout_s,
            outputs=selected, request_id=request_id or "", rows=rows,
            dtypes=signature.input_dtypes, published=now)
        reply = await self._broker.request(request)
        return reply.result()

    def observe(self, model: str, route: str, started: float,
                error: InfernoError | None = None) -> None:
        """Count one predict call; unknown model names share one label (bounded cardinality)."""
        label = model if model in self._view.models else "_other"
        children = self._children.get((label, route))
        if children is None:  # labels() costs more than the observation: look it up once
            children = (self._metrics.requests.labels(label, route),
                        self._metrics.latency.labels(label, route))
            self._children[label, route] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        if error is not None:
            self._metrics.exceptions.labels(label, route, error.code).inc()
