"""The v1 HTTP API: a thin adapter that parses v1 JSON and calls the predict and admin services.

Predict bodies are parsed with orjson and decoded straight to numpy (no pydantic model of tensor
data); replies are encoded once by orjson, numpy arrays included.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from common.codecs import Codec, decode_tensor, encode_tensor
from common.errors import InfernoError, InvalidInput, ModelNotLoaded
from common.logging import request_id_var
from common.model_config import MODEL_NAME
from facade.admin_service import AdminService
from facade.cluster_view import ClusterView
from facade.predict_service import PredictService

__all__ = ["v1_router"]

_JSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=MODEL_NAME)]
    version: Annotated[int, Field(ge=1)] | None = None


class VersionRef(ModelRef):
    version: Annotated[int, Field(ge=1)]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=_JSON_NUMPY), status_code=status,
                    media_type="application/json")


def _body_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object")
    return body


def _version_of(body: dict[str, Any]) -> int | None:
    version = body.get("version")
    if version is None:
        return None
    if isinstance(version, str) and version.isdigit():
        return int(version)
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return version
    raise InvalidInput("'version' must be a positive integer")


def v1_router(service: PredictService, admin: AdminService, view: ClusterView) -> APIRouter:
    router = APIRouter(tags=["v1"])

    async def predict(name: str, version: int | None, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = _body_object(await request.body())
            entry = service.resolve(name, version if version is not None else _version_of(body))
            config = entry.config
            signature = config.signature
            inputs = body.get("inputs")
            if not isinstance(inputs, dict) or not inputs:
                raise InvalidInput("'inputs' must be an object mapping input names to tensors")
            signature.check_input_names(inputs)
            specs = signature.input_specs
            arrays = {n: decode_tensor(n, p, specs[n].dtype) for n, p in inputs.items()}
            outputs = body.get("outputs")
            if outputs is not None and not (
                    isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)):
                raise InvalidInput("'outputs' must be a list of output names")
            codec = _codec_of(body, config.codecs.default)
            result = await service.infer(config, arrays, outputs,
                                         service.deadline_s(config, body.get("timeout_ms")),
                                         request_id_var.get())
        except InfernoError as exc:
            service.observe(name, "v1", started, exc)
            raise
        dtypes = {s.name: s.dtype for s in signature.outputs}
        response = _json({"model": name, "version": config.version, "outputs": {
            n: encode_tensor(a, dtypes[n], codec) for n, a in result.items()}})
        service.observe(name, "v1", started)
        return response

    @router.post("/v1/models/{name}:predict", summary="Predict with the active version")
    async def predict_active(name: str, request: Request) -> Response:
        return await predict(name, None, request)

    @router.post("/v1/models/{name}/versions/{version}:predict",
                 summary="Predict with a pinned version")
    async def predict_pinned(name: str, version: Annotated[int, Field(ge=1)],
                             request: Request) -> Response:
        return await predict(name, version, request)

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


def _codec_of(body: dict[str, Any], default: Codec) -> Codec:
    codec = body.get("codec")
    if codec is None:
        return default
    try:
        return Codec(codec)
    except ValueError:
        raise InvalidInput(f"Unknown codec {codec!r}; use one of: "
                           f"{', '.join(c.value for c in Codec)}") from None


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
