"""The Open Inference Protocol v2 (KServe REST) beside infer (``facade.front``'s): server and
model metadata, readiness, and Triton's model repository, model configuration and statistics
extensions.
Errors use the protocol's ``{"error": "..."}`` body (``facade.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.routing import ModelName, Version, json_body, json_response
from facade.statistics import model_statistics
from facade.v2_models import (
    config_of,
    is_ready,
    load_with_parameters,
    metadata,
    repository_index,
    resolve,
    unload_every_version,
)

__all__ = ["RepositoryLoad", "v2_router"]

SERVER_NAME = "inferno"
SERVER_VERSION = "0.1.0"


class RepositoryLoad(BaseModel):
    """The body of a repository load, which may be left out: Triton's load parameters."""

    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] = {}
    """``config``: Triton's model configuration, a JSON string
    (``facade.v2_models.load_with_parameters``)."""


def v2_router(admin: AdminService, view: ClusterView, guard: Guard | None = None, *,
              extensions: list[str]) -> APIRouter:
    """``extensions``: what server metadata lists (``facade.v2_models.extensions``)."""
    guard = guard or Guard(None, None, "127.0.0.1")
    router = APIRouter(tags=["v2"])
    api_only, admin_only = [Depends(guard.api)], [Depends(guard.admin)]
    repository = view.repository

    @router.get("/v2", summary="Server metadata",
                dependencies=api_only)
    async def server_metadata() -> Response:
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION,
                              "extensions": extensions})

    @router.get("/v2/health/live", summary="Server liveness")
    async def server_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="Ready: every active model has a live worker")
    async def server_ready() -> Response:
        ok = view.ready()[0]
        return json_response({"ready": ok}, 200 if ok else 400)

    # Before /v2/models/{name}: this path is statistics, as in Triton, not a model's metadata.
    @router.get("/v2/models/stats", summary="Statistics of every model version (Triton "
                "extension)", dependencies=api_only)
    async def statistics() -> Response:
        return json_response(await model_statistics(view))

    @router.get("/v2/models/{name}", summary="Model metadata (active version)",
                dependencies=api_only)
    async def model_metadata(name: ModelName) -> Response:
        return json_response(metadata(resolve(view, name, None),
                                      sorted(repository.versions(name))))

    @router.get("/v2/models/{name}/versions/{version}", summary="Model version metadata",
                dependencies=api_only)
    async def version_metadata(name: ModelName, version: Version) -> Response:
        return json_response(metadata(resolve(view, name, version), [version]))

    @router.get("/v2/models/{name}/ready", summary="Model readiness (active version)",
                dependencies=api_only)
    async def model_ready(name: ModelName) -> Response:
        ok = is_ready(view, name, None)
        return json_response({"name": name, "ready": ok}, 200 if ok else 400)

    @router.get("/v2/models/{name}/versions/{version}/ready", summary="Model version readiness",
                dependencies=api_only)
    async def version_ready(name: ModelName, version: Version) -> Response:
        ok = is_ready(view, name, version)
        return json_response({"name": name, "version": str(version), "ready": ok},
                             200 if ok else 400)

    @router.get("/v2/models/{name}/config", summary="Model configuration (Triton extension)",
                dependencies=api_only)
    async def model_config(name: ModelName) -> Response:
        return json_response(config_of(resolve(view, name, None)))

    @router.get("/v2/models/{name}/versions/{version}/config", summary="Version configuration",
                dependencies=api_only)
    async def version_config(name: ModelName, version: Version) -> Response:
        return json_response(config_of(resolve(view, name, version)))

    @router.get("/v2/models/{name}/stats", summary="Statistics of every version of a model",
                dependencies=api_only)
    async def model_stats(name: ModelName) -> Response:
        return json_response(await model_statistics(view, name))

    @router.get("/v2/models/{name}/versions/{version}/stats", summary="Version statistics",
                dependencies=api_only)
    async def version_stats(name: ModelName, version: Version) -> Response:
        return json_response(await model_statistics(view, name, version))

    @router.post("/v2/repository/index", summary="Every model version and its state",
                 dependencies=admin_only)
    async def index() -> Response:
        return json_response(repository_index(view))

    @router.post("/v2/repository/models/{name}/load", summary="Load a model (newest version)",
                 dependencies=admin_only,
                 openapi_extra={"requestBody": {"required": False, "content": {
                     "application/json": {"schema": RepositoryLoad.model_json_schema()}}}})
    async def repository_load(name: ModelName, request: Request) -> Response:
        body = await json_body(request, RepositoryLoad, optional=True)
        await load_with_parameters(admin, view, name, body.parameters)
        return json_response({})

    @router.post("/v2/repository/models/{name}/unload", summary="Unload every version",
                 dependencies=admin_only)
    async def repository_unload(name: ModelName) -> Response:
        await unload_every_version(admin, view, name)
        return json_response({})

    return router

