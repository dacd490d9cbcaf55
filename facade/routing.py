"""What the FastAPI routers (v1, v2) share: their parameters and their JSON response."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from common.model.config import MODEL_NAME
from facade.protocol import parse_version

__all__ = ["ModelName", "Version", "json_response"]

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


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
