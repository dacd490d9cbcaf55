"""The v1 HTTP API: admin and listing routes, and the documented predict routes.

Predict requests normally never reach these routes: ``facade.front.Front`` answers them in ASGI
with the same ``V1Predict`` adapter. They stay here so the OpenAPI schema documents them and any
mount without the fast path still serves them.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from common.errors import ModelNotLoaded
from common.model.config import MODEL_NAME
from facade.admin_service import AdminService
from facade.cluster_view import ClusterView
from facade.v1_protocol import V1Predict

__all__ = ["v1_router"]


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=MODEL_NAME)]
    version: Annotated[int, Field(ge=1)] | None = None


class VersionRef(ModelRef):
    version: Annotated[int, Field(ge=1)]


def _json_bytes(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _json(payload: Any) -> Response:
    return _json_bytes(orjson.dumps(payload))


def v1_router(predict: V1Predict, admin: AdminService, view: ClusterView) -> APIRouter:
    router = APIRouter(tags=["v1"])

    @router.post("/v1/models/{name}:predict", summary="Predict with the active version")
    async def predict_active(name: str, request: Request) -> Response:
        return _json_bytes(await predict(name, None, await request.body()))

    @router.post("/v1/models/{name}/versions/{version}:predict",
                 summary="Predict with a pinned version")
    async def predict_pinned(name: str, version: Annotated[int, Field(ge=1)],
                             request: Request) -> Response:
        return _json_bytes(await predict(name, version, await request.body()))

    @router.get("/v1/models", summary="Every model: versions, active, loaded, serving workers")
    async def list_models() -> Response:
        return _json({"models": [_summary(view, n) for n in view.repository.names()],
                      "repository_errors": [str(p) for p in view.repository.problems]})

    @router.get("/v1/models/{name}", summary="A model's versions with their full signatures")
    async def model_metadata(name: str) -> Response:
        summary = _summary(view, name)
        summary["versions"] = [
            {**entry.config.describe(), "loaded": bool(view.serving(name, v))}
            for v, entry in sorted(view.repository.versions(name).items())]
        return _json(summary)

    @router.get("/v1/models/{name}/active", summary="The active version and its signature")
    async def active_version(name: str) -> Response:
        summary = _summary(view, name)
        if summary["active"] is None:
            raise ModelNotLoaded(f"Model '{name}' has no active version; "
                                 f"activate one with POST /v1/models:activate")
        entry = view.repository.get(name, summary["active"])
        return _json({**entry.config.describe(), "loaded": bool(
            view.serving(name, entry.config.version))})

    @router.post("/v1/models:load", summary="Load a version (default: newest) on the workers")
    async def load(ref: ModelRef) -> Response:
        return _json(await admin.load(ref.name, ref.version))

    @router.post("/v1/models:unload", summary="Unload a version (default: every version)")
    async def unload(ref: ModelRef) -> Response:
        return _json(await admin.unload(ref.name, ref.version))

    @router.post("/v1/models:activate", summary="Switch the active version (hot swap)")
    async def activate(ref: VersionRef) -> Response:
        return _json(await admin.activate(ref.name, ref.version))

    return router


def _summary(view: ClusterView, name: str) -> dict[str, Any]:
    versions = sorted(view.repository.versions(name))
    state = view.models.get(name)
    workers = {str(v): [w.worker_id for w in view.workers if w.serves(name, v)]
               for v in versions}
    return {
        "name": name,
        "versions": versions,
        "active": state.active if state else None,
        "desired": sorted(state.desired) if state else [],
        "loaded": [v for v in versions if workers[str(v)]],
        "workers": {v: ids for v, ids in workers.items() if ids},
    }
