"""Liveness, readiness and Prometheus metrics.

Readiness is false while an active model version has no live worker, and while one of the
process's supervised background loops (common/supervisor.py) is down: ``waiting_for`` names both
(``<model>:<version>``, ``loop:<name>``), and ``down`` says why each loop is down.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from facade.cluster_view import ClusterView

__all__ = ["health_router"]


def health_router(view: ClusterView, registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process serves HTTP")
    async def live() -> Response:
        return Response(b'{"status":"live"}', media_type="application/json")

    @router.get("/health/ready",
                summary="Every active model has a live worker, no background loop is down")
    async def ready() -> Response:
        ok, missing = view.ready()
        body: dict[str, object] = {"status": "ready"}
        if not ok:
            body = {"status": "not_ready", "waiting_for": missing}
            if down := view.supervisor.down():
                body["down"] = down
        return Response(orjson.dumps(body), status_code=200 if ok else 503,
                        media_type="application/json")

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
