"""What the FastAPI routers (v1, v2) share: their parameters, JSON bodies and JSON response."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Path as PathParam
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from common.errors import InvalidJson
from common.model.config import MODEL_NAME
from common.wire.json_request import parse_json_object
from facade.protocol import parse_version

__all__ = ["ModelName", "Version", "json_body", "json_response"]

M = TypeVar("M", bound=BaseModel)

ModelName = Annotated[str, PathParam(pattern=MODEL_NAME)]
"""A model name in a path: anything else is a 422 (v2: 400) before a lookup."""


def _version(value: object) -> int:
    try:
        return parse_version(value)
    except ValueError as exc:  # pydantic's own error, so it is reported with its location
        raise PydanticCustomError("version", str(exc)) from None


Version = Annotated[int, PlainValidator(_version),
                    WithJsonSchema({"type": "integer", "minimum": 1})]
"""A model version in a path or an admin body, read as every predict reads one
(``facade.protocol.parse_version``)."""


async def json_body(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The request's JSON body as ``model``, whatever its content type says (tritonclient sends
    JSON with none, which FastAPI's body parameters refuse); ``optional``: an empty body reads
    as ``{}`` (else it is not JSON). Refused as FastAPI refuses a body it validates."""
    raw = await request.body()
    try:
        return model.model_validate(
            parse_json_object(raw, InvalidJson) if raw or not optional else {})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
