"""The admin console: a page at ``/console`` and the one JSON document it polls.

The page (``facade/static/console``: HTML, CSS and JavaScript modules, no build step) is static
and holds no data, so it is served to anyone, as ``/docs`` is; everything it shows comes from
``GET /console/api/state``, guarded like the metadata routes (``INFERNO_API_TOKEN``, or the
admin token), and its buttons call the admin routes themselves (``INFERNO_ADMIN_TOKEN``), with
the token typed into the page.

``/console/api/state`` is computed from what this facade already holds, nothing is asked of the
store or the broker on the request: the cluster view (models, versions, workers), the queue
watch's last reading (``Facade.queues``), and this process's metrics registry, as cumulative
counters and histogram buckets. The page turns two readings into rates and percentiles (the
counters' deltas over its window), so the server keeps no state per viewer.

Batch sizes come from the workers' heartbeats (``WorkerInfo.statistics``: Triton's statistics,
whose batches and rows answered per version ``facade.statistics.summed`` adds up over the live
workers): the same source in embedded and distributed mode, since a distributed facade runs no
batches and its registry has no batch histogram.

Neither route is in the OpenAPI schema: they serve the page, not API clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from starlette.exceptions import HTTPException

from common.transport.broker import QueueStats
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.grpc_server import GrpcServer
from facade.queue_stats import QueueWatch
from facade.statistics import summed

__all__ = ["STATIC", "console_router", "console_state"]

STATIC = resources.files("facade") / "static" / "console"
"""The page's files, shipped as package data."""

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def console_router(view: ClusterView, queues: QueueWatch, registry: CollectorRegistry,
                   guard: Guard, grpc: GrpcServer) -> APIRouter:
    router = APIRouter(tags=["console"], include_in_schema=False)
    # The files are listed once: a path is looked up in this table, never joined to a folder.
    files = {f.name: f for f in STATIC.iterdir() if f.is_file() and f.name[-4:] != ".pyc"
             and any(f.name.endswith(s) for s in _TYPES)}

    def _file(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise HTTPException(404)  # answered as every unknown route: 404 not_found
        media = _TYPES[name[name.rfind("."):]]
        # no-cache: revalidated each time, so a server upgrade never runs yesterday's script.
        return Response(found.read_bytes(), media_type=media,
                        headers={"cache-control": "no-cache",
                                 "x-content-type-options": "nosniff"})

    @router.get("/console")
    async def page() -> Response:
        response = _file("index.html")
        # The page runs only its own scripts and talks only to this server.
        response.headers["content-security-policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
        return response

    @router.get("/console/")
    async def page_slash() -> Response:
        return RedirectResponse("../console", status_code=308)

    @router.get("/console/static/{name}")
    async def static(name: str) -> Response:
        return _file(name)

    @router.get("/console/api/state", dependencies=[Depends(guard.api)])
    async def state() -> Response:
        body = console_state(view, queues.snapshot(), queues.dead_letters, registry, guard,
                             grpc)
        return Response(orjson.dumps(body), media_type="application/json",
                        headers={"cache-control": "no-store"})

    return router


def console_state(view: ClusterView, queues: Mapping[tuple[str, int], QueueStats],
                  dead_letters: int | None, registry: CollectorRegistry,
                  guard: Guard, grpc: GrpcServer) -> dict[str, Any]:
    """The document ``GET /console/api/state`` answers (shape in docs/console.md)."""
    metrics = _read_metrics(registry.collect())
    ready, waiting = view.ready()
    ran = summed(view.workers)
    models = []
    for name in view.repository.names():
        state = view.models.get(name)
        desired = state.desired if state else frozenset()
        versions = []
        for version in sorted(view.repository.versions(name)):
            queue = queues.get((name, version))
            versions.append({
                "version": version,
                "active": state is not None and state.active == version,
                "desired": version in desired,
                "workers": [w.worker_id for w in view.workers if w.serves(name, version)],
                "failed": view.load_failure(name, version),
                "queue": None if queue is None else {"messages": queue.messages,
                                                     "consumers": queue.consumers},
            })
        counted = [ran[key] for version in view.repository.versions(name)
                   if (key := f"{name}:{version}") in ran]
        models.append({"name": name, "active": state.active if state else None,
                       "versions": versions,
                       "metrics": {**metrics.model(name),
                                   "batch": {"batches": sum(s.execution_count for s in counted),
                                             "rows": sum(s.inference_count for s in counted)}}})
    return {
        "at": time.time(),
        "ready": ready,
        "waiting_for": waiting,
        "auth": {"admin_open": guard.admin_open, "api_token": guard.guards_api},
        "grpc": {"port": grpc.port, "tls": grpc.tls},
        "queues": bool(queues),
        "dead_letters": dead_letters,
        "workers": [{"id": w.worker_id, "host": w.host, "device": w.device,
                     "capacity": w.capacity, "started_at": w.started_at,
                     "loaded": {m: list(v) for m, v in sorted(w.loaded.items())}}
                    for w in sorted(view.workers, key=lambda w: w.worker_id)],
        "models": models,
        "repository_errors": [str(p) for p in view.repository.problems],
    }


class _Histogram:
    """One model's cumulative buckets of a histogram, summed over its other labels."""

    def __init__(self) -> None:
        self.bounds: dict[float, float] = {}
        self.sum = 0.0

    def add_bucket(self, le: str, value: float) -> None:
        bound = math.inf if le == "+Inf" else float(le)
        self.bounds[bound] = self.bounds.get(bound, 0.0) + value

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.bounds.items())
        finite = [b for b, _ in ordered if b != math.inf]
        counts = [int(c) for _, c in ordered]
        return {"le": finite, "counts": counts, "count": counts[-1] if counts else 0,
                "sum": self.sum}


class _Metrics:
    def __init__(self) -> None:
        self.requests: dict[str, float] = {}
        self.errors: dict[str, dict[str, float]] = {}
        self.latency: dict[str, _Histogram] = {}

    def model(self, name: str) -> dict[str, Any]:
        errors = self.errors.get(name, {})
        return {
            "requests": int(self.requests.get(name, 0)),
            "errors": int(sum(errors.values())),
            "errors_by_code": {code: int(n) for code, n in sorted(errors.items())},
            "latency": (self.latency.get(name) or _Histogram()).to_json(),
        }


def _read_metrics(families: Iterable[Metric]) -> _Metrics:
    """The families of ``common.metrics`` the console shows, per ``model`` label."""
    out = _Metrics()
    for family in families:
        if family.name == "infer_requests":
            for s in family.samples:
                if s.name == "infer_requests_total":
                    model = s.labels["model"]
                    out.requests[model] = out.requests.get(model, 0.0) + s.value
        elif family.name == "infer_exceptions":
            for s in family.samples:
                if s.name == "infer_exceptions_total":
                    codes = out.errors.setdefault(s.labels["model"], {})
                    code = s.labels["code"]
                    codes[code] = codes.get(code, 0.0) + s.value
        elif family.name == "infer_latency_seconds":
            for s in family.samples:
                hist = out.latency.setdefault(s.labels["model"], _Histogram())
                if s.name.endswith("_bucket"):
                    hist.add_bucket(s.labels["le"], s.value)
                elif s.name.endswith("_sum"):
                    hist.sum += s.value
    return out
