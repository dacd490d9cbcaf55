"""The Open Inference Protocol v2 (KServe REST) beside infer (``facade.front``'s): server and
model metadata, readiness, and Triton's model repository and model configuration extensions.
Errors use the protocol's ``{"error": "..."}`` body (``facade.errors``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from common.model.config import ModelConfig, ModelFormat
from common.model.dtypes import DType
from common.model.signature import BATCH, TensorSpec
from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.routing import ModelName, Version, json_response
from facade.v2_protocol import datatype_of

__all__ = ["EXTENSIONS", "v2_router"]

SERVER_NAME = "inferno"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]
_PLATFORMS = {ModelFormat.TORCHSCRIPT: "pytorch_libtorch", ModelFormat.PYTHON: "python"}


def _shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def _metadata(config: ModelConfig, versions: list[int]) -> dict[str, Any]:
    return {
        "name": config.name,
        "versions": [str(v) for v in versions],
        "platform": _PLATFORMS[config.format],
        "inputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": _shape(s)}
                   for s in config.signature.inputs],
        "outputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": _shape(s)}
                    for s in config.signature.outputs],
    }


_TRITON_TYPE = {DType.STRING: "TYPE_STRING"}
"""Where Triton's model configuration names a type otherwise than the protocol (BYTES)."""


def _config(config: ModelConfig) -> dict[str, Any]:
    """Triton's model configuration: dims without the batch dimension, max_batch_size > 0."""
    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": _TRITON_TYPE.get(s.dtype,
                                                               f"TYPE_{datatype_of(s.dtype)}"),
                 "dims": [d if isinstance(d, int) else -1 for d in s.shape if d != BATCH]}
                for s in specs]

    return {
        "name": config.name,
        "platform": _PLATFORMS[config.format],
        "backend": "pytorch" if config.format is ModelFormat.TORCHSCRIPT else "python",
        "max_batch_size": config.batching.max_batch_size,
        "input": tensors(config.signature.inputs),
        "output": tensors(config.signature.outputs),
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(config.batching.max_batch_latency_ms * 1000)},
        "instance_group": [{"count": config.concurrency.max_concurrency,
                            "kind": "KIND_GPU" if config.device == "cuda" else "KIND_AUTO"}],
    }


def v2_router(admin: AdminService, view: ClusterView, guard: Guard | None = None) -> APIRouter:
    guard = guard or Guard(None, None, "127.0.0.1")
    router = APIRouter(tags=["v2"])
    api_only, admin_only = [Depends(guard.api)], [Depends(guard.admin)]
    repository = view.repository

    def resolve(name: str, version: int | None) -> ModelConfig:
        if version is None:
            state = view.models.get(name)
            version = state.active if state and state.active is not None else None
        return repository.get(name, version).config

    def ready(name: str, version: int | None) -> bool:
        state = view.models.get(name)
        if version is None:
            version = state.active if state else None
        return version is not None and bool(view.serving(name, version))

    @router.get("/v2", summary="Server metadata",
                dependencies=api_only)
    async def server_metadata() -> Response:
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION,
                              "extensions": EXTENSIONS})

    @router.get("/v2/health/live", summary="Server liveness")
    async def server_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="Ready: every active model has a live worker")
    async def server_ready() -> Response:
        ok = view.ready()[0]
        return json_response({"ready": ok}, 200 if ok else 400)

    @router.get("/v2/models/{name}", summary="Model metadata (active version)",
                dependencies=api_only)
    async def model_metadata(name: ModelName) -> Response:
        return json_response(_metadata(resolve(name, None), sorted(repository.versions(name))))

    @router.get("/v2/models/{name}/versions/{version}", summary="Model version metadata",
                dependencies=api_only)
    async def version_metadata(name: ModelName, version: Version) -> Response:
        return json_response(_metadata(resolve(name, version), [version]))

    @router.get("/v2/models/{name}/ready", summary="Model readiness (active version)",
                dependencies=api_only)
    async def model_ready(name: ModelName) -> Response:
        repository.versions(name)
        ok = ready(name, None)
        return json_response({"name": name, "ready": ok}, 200 if ok else 400)

    @router.get("/v2/models/{name}/versions/{version}/ready", summary="Model version readiness",
                dependencies=api_only)
    async def version_ready(name: ModelName, version: Version) -> Response:
        repository.get(name, version)
        ok = ready(name, version)
        return json_response({"name": name, "version": str(version), "ready": ok},
                             200 if ok else 400)

    @router.get("/v2/models/{name}/config", summary="Model configuration (Triton extension)",
                dependencies=api_only)
    async def model_config(name: ModelName) -> Response:
        return json_response(_config(resolve(name, None)))

    @router.get("/v2/models/{name}/versions/{version}/config", summary="Version configuration",
                dependencies=api_only)
    async def version_config(name: ModelName, version: Version) -> Response:
        return json_response(_config(resolve(name, version)))

    @router.post("/v2/repository/index", summary="Every model version and its state",
                 dependencies=admin_only)
    async def repository_index() -> Response:
        index = []
        for name in repository.names():
            state = view.models.get(name)
            for version in sorted(repository.versions(name)):
                serving = bool(view.serving(name, version))
                wanted = state is not None and version in state.desired
                failed = None if serving or not wanted else view.load_failure(name, version)
                index.append({"name": name, "version": str(version),
                              "state": "READY" if serving else
                              ("LOADING" if wanted and not failed else "UNAVAILABLE"),
                              "reason": failed or ("" if serving or wanted else "unloaded")})
        return json_response(index)

    @router.post("/v2/repository/models/{name}/load", summary="Load a model (newest version)",
                 dependencies=admin_only)
    async def repository_load(name: ModelName) -> Response:
        await admin.load(name, None)
        return json_response({})

    @router.post("/v2/repository/models/{name}/unload", summary="Unload every version",
                 dependencies=admin_only)
    async def repository_unload(name: ModelName) -> Response:
        state = view.models.get(name)
        if state is None or not state.desired:
            repository.versions(name)
            return json_response({})  # Triton answers an unload of an unloaded model with success
        await admin.unload(name, None)
        return json_response({})

    return router

