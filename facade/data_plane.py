"""The data plane: one predict, from a protocol's request to that protocol's response.

Every protocol (v1, v2, any future one) hands ``DataPlane.infer`` a ``ProtocolCall``
(``facade.protocol``): an object that can read its own envelope, decode its tensors against a
signature and encode a result. The data plane does everything between, in this order and nowhere
else:

1. ``parse``: the protocol reads its envelope (JSON, version asked in the body, timeout);
2. route: the cluster view picks the model version (404 / 503 when none serves);
3. ``decode``: the protocol decodes its tensors against that version's signature;
4. deadline: the request's own timeout, else the model's, else the default, capped;
5. admit: ``PredictRequest.admit``, the admission workers run on what producers send (no
   tensor past ``INFERNO_MAX_ELEMENTS_PER_TENSOR`` elements, then ``Signature.validate_request``),
   makes the ``PredictRequest``;
6. publish and await the reply through the ``Broker`` (``broker.request``);
7. ``encode``: the protocol writes its response;
8. observe: every outcome is counted, errors by code, unexpected ones as ``internal``, calls
   cancelled because their client went away as ``cancelled``.

A protocol whose body names the model and whose request may take several calls (OpenAI's
embeddings: a list longer than ``max_batch_size`` is split) plans them first: ``route`` is step
2 alone, ``refusals`` counts a refusal while planning as a failed call; then each part is an
``infer`` call of its own, pinned to the version planned.

The request's deadline is enforced in three places: here (the wait on the broker is bounded by
it), in the message (the broker drops it when it expires in the queue) and in the worker (expired
requests are dropped before a batch runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import Counter, Histogram

from common.errors import InfernoError
from common.metrics import FacadeMetrics
from common.model.config import ModelConfig
from common.settings import FacadeSettings
from common.transport.broker import Broker
from common.wire.messages import PredictRequest
from facade.cluster_view import ClusterView
from facade.protocol import ProtocolCall

__all__ = ["DataPlane"]

T_co = TypeVar("T_co", covariant=True)
INTERNAL = "internal"
"""The error code counted for an exception that is not an ``InfernoError``."""
CANCELLED = "cancelled"
"""The code counted for a call cancelled before its answer: its client went away."""


class DataPlane:
    def __init__(self, settings: FacadeSettings, broker: Broker, view: ClusterView,
                 metrics: FacadeMetrics) -> None:
        self._settings = settings
        self._broker = broker
        self._view = view
        self._metrics = metrics
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    async def infer(self, model: str, pinned: int | None, call: ProtocolCall[T_co],
                    request_id: str = "") -> T_co:
        """Answer ``call`` for ``model`` (``pinned``: the version in the URL, if any)."""
        started = time.perf_counter()
        code: str | None = None
        try:
            asked, timeout_ms = call.parse()
            config = self._view.route(model, pinned if pinned is not None else asked).config
            inputs, outputs = call.decode(config)
            now = time.time()
            request = PredictRequest.admit(
                config, inputs, outputs, max_elements=self._settings.max_elements_per_tensor,
                deadline=now + self._timeout_s(config, timeout_ms), request_id=request_id,
                published=now)
            reply = await self._broker.request(request,
                                               coalesce_rows=config.batching.max_batch_size)
            return call.encode(config, reply.result())
        except InfernoError as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:  # the client went away (facade.front) or a shutdown
            code = CANCELLED
            raise
        except Exception:
            code = INTERNAL
            raise
        finally:
            self._observe(model, call.route, started, code)

    def route(self, model: str, version: int | None) -> ModelConfig:
        """The configuration of the version ``infer`` would send a call for ``model`` to
        (``version``: pinned; ``None``: the active one), or the error that says why none."""
        return self._view.route(model, version).config

    @contextmanager
    def refusals(self, model: str, route: str) -> Iterator[None]:
        """Count an error raised inside as a failed call of ``route``, as ``infer`` counts one:
        around what a protocol checks before its calls."""
        started = time.perf_counter()
        try:
            yield
        except InfernoError as exc:
            self._observe(model, route, started, exc.code)
            raise

    def _timeout_s(self, config: ModelConfig, timeout_ms: float | None) -> float:
        """Seconds this request may take: its own ask, else the model's, else the default."""
        if timeout_ms is None:
            timeout_ms = config.timeout_ms or self._settings.request_timeout_ms
        return min(timeout_ms, self._settings.max_request_timeout_ms) / 1000

    def _observe(self, model: str, route: str, started: float, code: str | None) -> None:
        """Count one predict call; unknown model names share one label (bounded cardinality)."""
        label = model if model in self._view.models else "_other"
        children = self._children.get((label, route))
        if children is None:  # labels() costs more than the observation: look it up once
            children = (self._metrics.requests.labels(label, route),
                        self._metrics.latency.labels(label, route))
            self._children[label, route] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
        if code is not None:
            self._metrics.exceptions.labels(label, route, code).inc()
