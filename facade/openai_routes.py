"""The OpenAI API's model listing: ``GET /openai/v1/models`` and ``GET /openai/v1/models/{model}``
(FastAPI; the embeddings themselves are ``facade.front``'s, through ``facade.openai_protocol``).

A model is listed when the version a request without a ``:version`` would get, the active one
(or the newest, while none is active), declares ``embeddings``; ``created`` is when that
version's model.yaml was last written. Errors answer in OpenAI's shape (``facade.errors``, by
path). These routes stay out of Inferno's OpenAPI document: OpenAI's own specification
describes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from common.errors import ModelNotFound
from common.model.repository import ModelEntry
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.routing import json_response

__all__ = ["openai_router"]


def openai_router(view: ClusterView, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["openai"], include_in_schema=False,
                       dependencies=[Depends(guard.api)])

    @router.get("/openai/v1/models")
    async def list_models() -> Response:
        entries = (_served(view, name) for name in view.repository.names())
        return json_response({"object": "list",
                              "data": [_model(e) for e in entries if e is not None]})

    @router.get("/openai/v1/models/{model}")
    async def retrieve_model(model: str) -> Response:
        entry = _served(view, model) if model in view.repository.names() else None
        if entry is None:
            raise ModelNotFound(f"The model '{model[:80]}' does not exist here or serves no "
                                f"embeddings; GET /openai/v1/models lists those that do",
                                model[:80])
        return json_response(_model(entry))

    return router


def _served(view: ClusterView, name: str) -> ModelEntry | None:
    """The version of ``name`` a request names by default, if it declares ``embeddings``."""
    state = view.models.get(name)
    try:
        entry = view.entry(name, state.active if state is not None else None)
    except ModelNotFound:  # its active version left the repository
        return None
    return entry if entry.config.embeddings is not None else None


def _model(entry: ModelEntry) -> dict[str, Any]:
    try:
        created = int((entry.directory / "model.yaml").stat().st_mtime)
    except OSError:  # removed since the scan
        created = 0
    return {"id": entry.config.name, "object": "model", "created": created,
            "owned_by": "inferno"}
