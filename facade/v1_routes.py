"""The v1 HTTP API's listing and admin routes (predict is ``facade.front``'s)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from common.errors import ModelNotLoaded
from common.model.config import MODEL_NAME
from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.routing import ModelName, Version, json_response

__all__ = ["v1_router"]


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=MODEL_NAME)]
    version: Version | None = None


class VersionRef(ModelRef):
    version: Version


def v1_router(admin: AdminService, view: ClusterView, guard: Guard | None = None) -> APIRouter:
    guard = guard or Guard(None, None, "127.0.0.1")
    router = APIRouter(tags=["v1"])
    api_only, admin_only = [Depends(guard.api)], [Depends(guard.admin)]

    @router.get("/v1/models", summary="Every model: versions, active, loaded, serving workers",
                dependencies=api_only)
    async def list_models() -> Response:
        return json_response({"models": [_summary(view, n) for n in view.repository.names()],
                              "repository_errors": [str(p) for p in view.repository.problems]})

    @router.get("/v1/models/{name}", summary="A model's versions with their full signatures",
                dependencies=api_only)
    async def model_metadata(name: ModelName) -> Response:
        summary = _summary(view, name)
        summary["versions"] = [
            {**view.entry(name, v).config.describe(), "loaded": bool(view.serving(name, v))}
            for v in sorted(view.repository.versions(name))]
        return json_response(summary)

    @router.get("/v1/models/{name}/active", summary="The active version and its signature",
                dependencies=api_only)
    async def active_version(name: ModelName) -> Response:
        summary = _summary(view, name)
        if summary["active"] is None:
            raise ModelNotLoaded(f"Model '{name}' has no active version; "
                                 f"activate one with POST /v1/models:activate")
        entry = view.entry(name, summary["active"])
        return json_response({**entry.config.describe(), "loaded": bool(
            view.serving(name, entry.config.version))})

    @router.post("/v1/models:load", summary="Load a version (default: newest) on the workers",
                 dependencies=admin_only)
    async def load(ref: ModelRef) -> Response:
        return json_response(await admin.load(ref.name, ref.version))

    @router.post("/v1/models:unload", summary="Unload a version (default: every version)",
                 dependencies=admin_only)
    async def unload(ref: ModelRef) -> Response:
        return json_response(await admin.unload(ref.name, ref.version))

    @router.post("/v1/models:activate", summary="Switch the active version (hot swap)",
                 dependencies=admin_only)
    async def activate(ref: VersionRef) -> Response:
        return json_response(await admin.activate(ref.name, ref.version))

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
        "failed": {str(v): why for v in versions if (why := view.load_failure(name, v))},
    }
