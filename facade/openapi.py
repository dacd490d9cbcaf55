"""The predict endpoints in the OpenAPI schema: documentation of what ``facade.front`` serves.

Predict requests never reach FastAPI (the front answers them), so no FastAPI route exists for
them; instead every entry of ``front.PREDICT_ROUTES`` is written into the schema that FastAPI
generates, with its body described by the pydantic models below. The models only document: the
protocol calls (``facade.v1_protocol``, ``facade.v2_protocol``) parse bodies with orjson.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from common.model.codecs import Codec
from facade.front import PREDICT_ROUTES, PredictRoute

__all__ = ["document_predict_routes"]


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
    version: int | None = Field(None, ge=1, description="A version, when the URL pins none")
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


_BODIES: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "v1": (V1PredictRequest, V1PredictResponse),
    "v2": (V2InferenceRequest, V2InferenceResponse),
}
_ERRORS = {"400": "Invalid request (v2)", "404": "Unknown model or version, or not loaded",
           "413": "Body too large", "422": "Invalid request (v1)",
           "503": "Overloaded, or no live worker", "504": "The request's deadline passed"}


def _operation(route: PredictRoute) -> dict[str, Any]:
    request, response = _BODIES[route.protocol]
    parameters = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if "{version}" in route.path:
        parameters.append({"name": "version", "in": "path", "required": True,
                           "schema": {"type": "integer", "minimum": 1}})
    content = {"application/json": {"schema": _ref(request)}}
    if route.protocol == "v2":  # the binary tensor extension: JSON header, then raw bytes
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    pinned = "pinned" if "{version}" in route.path else "active"
    return {
        "tags": [route.protocol], "summary": route.summary,
        "operationId": f"predict_{route.protocol}_{pinned}",
        "parameters": parameters,
        "requestBody": {"required": True, "content": content},
        "responses": {"200": {"description": "The outputs",
                              "content": {"application/json": {"schema": _ref(response)}}},
                      **{code: {"description": why} for code, why in _ERRORS.items()}},
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document_predict_routes(api: FastAPI) -> None:
    """Add ``PREDICT_ROUTES`` to the OpenAPI schema ``api`` serves at ``/openapi.json``."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for request, response in _BODIES.values():
            for model in (request, response):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(definition.pop("$defs", {}))
                schemas[model.__name__] = definition
        for route in PREDICT_ROUTES:
            schema["paths"].setdefault(route.path, {})["post"] = _operation(route)
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
