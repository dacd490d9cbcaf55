"""Triton's system shared memory extension over REST: register, unregister and status of regions
(``facade.shared_memory``). Status takes the API token, register and unregister the admin token;
with ``INFERNO_SHARED_MEMORY`` other than ``system`` every route answers 400 saying so. Errors
use the v2 ``{"error": "..."}`` body (``facade.errors``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, StrictInt, StrictStr

from facade.auth import Guard
from facade.routing import json_body, json_response
from facade.shared_memory import SharedMemoryRegistry

__all__ = ["RegisterRegion", "shared_memory_router"]

_PREFIX = "/v2/systemsharedmemory"


class RegisterRegion(BaseModel):
    """The body of a region's register: ``byte_size`` bytes at ``offset`` of the object ``key``
    (``/name``, a file under ``/dev/shm``)."""

    key: StrictStr
    offset: StrictInt = 0
    byte_size: StrictInt


def shared_memory_router(registry: SharedMemoryRegistry, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["v2"])
    api_only, admin_only = [Depends(guard.api)], [Depends(guard.admin)]

    @router.get(f"{_PREFIX}/status", summary="Every registered system shared memory region",
                dependencies=api_only)
    async def status() -> Response:
        return json_response(registry.status())

    @router.get(f"{_PREFIX}/region/{{name}}/status", summary="One region's status",
                dependencies=api_only)
    async def region_status(name: str) -> Response:
        return json_response(registry.status(name))

    @router.post(f"{_PREFIX}/region/{{name}}/register",
                 summary="Register part of a /dev/shm object as a region", dependencies=admin_only,
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": RegisterRegion.model_json_schema()}}}})
    async def register(name: str, request: Request) -> Response:
        body = await json_body(request, RegisterRegion)
        registry.register(name, body.key, body.offset, body.byte_size)
        return json_response({})

    @router.post(f"{_PREFIX}/region/{{name}}/unregister", summary="Unregister a region",
                 dependencies=admin_only)
    async def unregister(name: str) -> Response:
        registry.unregister(name)
        return json_response({})

    @router.post(f"{_PREFIX}/unregister", summary="Unregister every region",
                 dependencies=admin_only)
    async def unregister_all() -> Response:
        registry.unregister()
        return json_response({})

    return router
