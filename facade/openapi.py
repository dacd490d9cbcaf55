"""The OpenAPI schema at ``/openapi.json``: what FastAPI generates, completed with what it cannot
see.

- The predict endpoints: predict requests never reach FastAPI (``facade.front`` answers them), so
  no FastAPI route exists for them; every entry of ``front.PREDICT_ROUTES`` is written into the
  schema, with its body described by the pydantic models below. The models only document: the
  protocol calls (``facade.v1_protocol``, ``facade.v2_protocol``) parse bodies with orjson.
- Every status each route can answer, with its body: the error bodies of ``facade.errors`` (v1
  ``{"error": {"code", "message"}}``, v2 ``{"error": "..."}``) in place of FastAPI's default 422
  (which our handler never sends), 400/401/403/404/413/422/500/503/504 where a route can give
  them, and the bearer token scheme of ``facade.auth`` on the routes it guards.

tests/integration/test_fuzz.py holds the server to this schema (schemathesis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from common.model.codecs import Codec
from common.model.config import MODEL_NAME
from facade.auth import Guard
from facade.front import PREDICT_ROUTES, PredictRoute

__all__ = ["document_predict_routes"]


_DIGITS = r"^[0-9]*[1-9][0-9]*$"
"""A version as a string: ASCII digits, not all zeros (``facade.protocol.parse_version``)."""


class V1Tensor(BaseModel):
    """One input: ``data`` (nested lists, or flat with ``shape``) or raw bytes in ``b64``."""

    model_config = ConfigDict(extra="forbid")
    data: Any = Field(None, description="Nested lists of numbers (or true/false)")
    b64: str | None = Field(None, description="Raw little-endian bytes, base64; needs shape")
    base64: str | None = Field(None, description="The same as b64 (the original Inferno's name)")
    shape: list[int] | None = None
    dtype: str | None = Field(None, description="Checked against the signature when given")


class V1PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    inputs: dict[str, V1Tensor]
    outputs: list[str] | None = Field(None, description="Outputs to return (default: all)")
    version: Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=_DIGITS)] | None = Field(
        None, description="A version (an integer, or a string of digits), when the URL pins none")
    codec: Codec | None = Field(None, description="Output encoding (default: the model's)")
    timeout_ms: float | None = Field(None, gt=0)


class V1Output(BaseModel):
    dtype: str
    shape: list[int]
    data: Any = None
    b64: str | None = None


class V1PredictResponse(BaseModel):
    model: str
    version: int
    outputs: dict[str, V1Output]


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the bytes follow the JSON header")
    data: Any = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true|false")


class V2InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="timeout (microseconds), binary_data_output")
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


@dataclass(frozen=True)
class _Bodies:
    """What a protocol's predict routes take and answer."""

    request: type[BaseModel]
    response: type[BaseModel]
    binary: bool = False
    """Triton's binary tensor extension: a JSON header, then raw bytes (its length in a
    header)."""


_BODIES = {"v1": _Bodies(V1PredictRequest, V1PredictResponse),
           "v2": _Bodies(V2InferenceRequest, V2InferenceResponse, binary=True)}
"""Per protocol (``HttpProtocol.name``)."""

BEARER = "bearer"
"""The security scheme of ``facade.auth``'s tokens."""

_ERROR_BODIES: dict[str, dict[str, Any]] = {
    "Error": {
        "title": "Error", "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "Stable: branch on it (docs/api.md)"},
            "message": {"type": "string"}}}},
        "description": "Every error outside /v2 (facade.errors)"},
    "V2Error": {
        "title": "V2Error", "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "description": "Every error under /v2: the Open Inference Protocol's format"},
}

# Why each status is answered; which routes answer it is decided in ``_statuses``.
_WHY = {
    "400": "Invalid request: the body is not JSON or its gzip/deflate coding does not decode "
           "(v1); any invalid request or path (v2)",
    "401": "A bearer token is required (INFERNO_API_TOKEN or INFERNO_ADMIN_TOKEN) and was "
           "missing or wrong",
    "403": "Admin calls are refused: the server listens on a non-loopback address without "
           "INFERNO_ADMIN_TOKEN",
    "404": "Unknown model or version, or not loaded",
    "413": "Body larger than INFERNO_MAX_BODY_BYTES (a gzip or deflate body: once inflated)",
    "415": "Content-Encoding other than gzip, deflate or identity",
    "422": "Invalid request: body, input, path parameter (the message names it)",
    "500": "The model raised or failed to load (model_failed), or the server broke",
    "503": "Overloaded, no live worker, or the broker or state store is unreachable",
    "504": "The request's deadline passed, or workers did not report an admin change in time",
}
_HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    "503": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds"}},
}
_HEALTH = ("/health/", "/v2/health/", "/metrics")

# Bodies of the successful answers of the FastAPI routes (they return pre-encoded responses,
# so FastAPI cannot see them). Loose where the content is open-ended: these describe the shape.
_NAMES = {"type": "array", "items": {"type": "integer"}}
_ADMIN_STATE = {"type": "object", "required": ["name", "active", "loaded"], "properties": {
    "name": {"type": "string"}, "active": {"type": ["integer", "null"]}, "loaded": _NAMES}}
_V2_READY = {"type": "object", "required": ["ready"], "properties": {
    "name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"}}}
_V2_STATS = {"type": "object", "required": ["model_stats"], "properties": {
    "model_stats": {"type": "array", "items": {"type": "object", "required": [
        "name", "version", "last_inference", "inference_count", "execution_count",
        "inference_stats", "batch_stats"]}}}}
"""Triton's statistics extension (facade.statistics)."""
_OK_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/models:load"): _ADMIN_STATE,
    ("post", "/v1/models:unload"): _ADMIN_STATE,
    ("post", "/v1/models:activate"): _ADMIN_STATE,
    ("get", "/v1/models"): {"type": "object", "required": ["models", "repository_errors"],
                           "properties": {"models": {"type": "array"},
                                          "repository_errors": {"type": "array"}}},
    ("get", "/v2"): {"type": "object", "required": ["name", "version", "extensions"]},
    ("get", "/v2/health/live"): {"type": "object", "required": ["live"]},
    ("get", "/v2/health/ready"): _V2_READY,
    ("get", "/v2/models/{name}/ready"): _V2_READY,
    ("get", "/v2/models/{name}/versions/{version}/ready"): _V2_READY,
    ("get", "/v2/models/stats"): _V2_STATS,
    ("get", "/v2/models/{name}/stats"): _V2_STATS,
    ("get", "/v2/models/{name}/versions/{version}/stats"): _V2_STATS,
    ("post", "/v2/repository/index"): {"type": "array", "items": {
        "type": "object", "required": ["name", "version", "state"]}},
    ("get", "/health/live"): {"type": "object", "required": ["status"]},
    ("get", "/health/ready"): {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "waiting_for": {"type": "array", "items": {"type": "string"}}}},
}


def _operation(route: PredictRoute) -> dict[str, Any]:
    name = route.protocol.name
    bodies = _BODIES[name]
    parameters = [{"name": "name", "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": MODEL_NAME}}]
    if "{version}" in route.path:
        parameters.append({"name": "version", "in": "path", "required": True,
                           "schema": {"type": "integer", "minimum": 1}})
    content = {"application/json": {"schema": _ref(bodies.request)}}
    ok: dict[str, Any] = {"description": "The outputs",
                          "content": {"application/json": {"schema": _ref(bodies.response)}}}
    if bodies.binary:
        binary = {"schema": {"type": "string", "format": "binary"}}
        content["application/octet-stream"] = binary
        ok["content"]["application/octet-stream"] = binary
        header_length = {"schema": {"type": "integer", "minimum": 0}, "description": (
            "Length of the JSON header when binary tensor data follows it")}
        parameters.append({"name": "Inference-Header-Content-Length", "in": "header",
                           "required": False, **header_length})
        ok["headers"] = {"Inference-Header-Content-Length": header_length}
    pinned = "pinned" if "{version}" in route.path else "active"
    return {
        "tags": [name], "summary": route.summary,
        "operationId": f"predict_{name}_{pinned}",
        "parameters": parameters,
        "requestBody": {"required": True, "content": content},
        "responses": {"200": ok},
    }


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": f"#/components/schemas/{name}"}


def _guards(api: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) → ``api`` or ``admin``: the token each FastAPI route depends on."""
    kinds: dict[object, str] = {Guard.api: "api", Guard.admin: "admin"}
    found: dict[tuple[str, str], str] = {}
    routes = list(api.routes)
    while routes:
        route = routes.pop()
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        routes.extend(getattr(included, "routes", ()))
        dependant = getattr(route, "dependant", None)
        for dependency in dependant.dependencies if dependant is not None else ():
            kind = kinds.get(getattr(dependency.call, "__func__", None))
            if kind is None:
                continue
            for method in getattr(route, "methods", ()):
                found[method.lower(), getattr(route, "path", "")] = kind
    return found


def _statuses(method: str, path: str, guard: str | None, predict: bool) -> list[str]:
    """Every status other than 200 that ``method path`` can answer."""
    if path.startswith(_HEALTH):
        return ["503"] if path == "/health/ready" else (
            ["400"] if path == "/v2/health/ready" else [])
    v2 = path.startswith("/v2")
    codes = {"401"} if guard is not None else set()
    if guard == "admin":
        codes.add("403")
    if method == "post":
        # The front refuses a large body on every route, before reading it, and inflates a
        # compressed one (400: it does not decode; 415: a coding it does not read).
        codes |= {"400", "413", "415"}
    if "{name}" in path:
        codes |= {"404", "400" if v2 else "422"}
    if predict:
        codes |= {"400", "500", "503", "504"} | (set() if v2 else {"422"})
    elif path.startswith("/v1/models:"):  # 503: the state store is unreachable
        codes |= {"400", "404", "422", "503", "504"} | (
            {"500"} if "unload" not in path else set())
    elif path.startswith("/v2/repository/models/"):
        codes |= {"503", "504"} | ({"500"} if path.endswith("/load") else set())
    if path.endswith("/ready"):
        codes.add("400")  # v2 readiness: not ready
    if path.startswith("/v2/systemsharedmemory/"):
        codes.add("400")  # the extension is off (facade.shared_memory_routes)
    return sorted(codes)


def _document_responses(schema: dict[str, Any], guards: dict[tuple[str, str], str]) -> None:
    predict = {r.path for r in PREDICT_ROUTES}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            is_predict = path in predict
            guard = "api" if is_predict and method == "post" else guards.get((method, path))
            error = _ref("V2Error" if path.startswith("/v2") else "Error")
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's HTTPValidationError: never sent as such
            ok = _OK_BODIES.get((method, path))
            if ok is not None:
                responses["200"] = {"description": responses.get("200", {}).get(
                    "description", "Successful Response"),
                    "content": {"application/json": {"schema": ok}}}
            if path == "/metrics":
                responses["200"] = {"description": "Prometheus text format",
                                    "content": {"text/plain": {"schema": {"type": "string"}}}}
            for code in _statuses(method, path, guard, is_predict):
                body: dict[str, Any] = error
                if code == "400" and path.endswith("/ready"):
                    body = {"anyOf": [_V2_READY, error]} if "{name}" in path else _V2_READY
                if code == "503" and path == "/health/ready":
                    body = _OK_BODIES[("get", "/health/ready")]
                response: dict[str, Any] = {"description": _WHY[code],
                                            "content": {"application/json": {"schema": body}}}
                if code in _HEADERS:
                    response["headers"] = _HEADERS[code]
                responses[code] = response
            if guard is not None:
                # Optional: without a token configured (and, for admin calls, on a loopback
                # address) the route is open.
                operation["security"] = [{BEARER: []}, {}]


def document_predict_routes(api: FastAPI) -> None:
    """Complete the OpenAPI schema ``api`` serves at ``/openapi.json``: ``PREDICT_ROUTES``, every
    route's statuses and error bodies, the bearer token scheme (see the module docstring)."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for bodies in _BODIES.values():
            for model in (bodies.request, bodies.response):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(definition.pop("$defs", {}))
                schemas[model.__name__] = definition
        schemas.update(_ERROR_BODIES)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components["securitySchemes"] = {BEARER: {
            "type": "http", "scheme": "bearer",
            "description": "INFERNO_API_TOKEN (predict, metadata) or INFERNO_ADMIN_TOKEN "
                           "(admin calls; accepted wherever the API token is)"}}
        for route in PREDICT_ROUTES:
            schema["paths"].setdefault(route.path, {})["post"] = _operation(route)
        _document_responses(schema, _guards(api))
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
