"""The Open Inference Protocol over gRPC: Triton's ``inference.GRPCInferenceService`` (a superset
of KServe's ``grpc_predict_v2``: same package and method names), on ``grpc.aio``.

``GrpcServer`` is built with the facade (cheap: nothing bound) and started by the launcher on
``INFERNO_GRPC_PORT``; ``InferenceServicer`` answers each RPC:

- ``ModelInfer`` and ``ModelStreamInfer`` through the data plane, each request a
  ``facade.grpc_protocol.GrpcCall``; a stream answers each request on the stream, in the order
  they finish, an error as that response's ``error_message`` (the stream stays open);
- health, metadata, Triton's model configuration and the repository extension from the same
  functions as the REST routes (``facade.v2_models``), the repository calls through the
  ``AdminService``;
- system shared memory (``INFERNO_SHARED_MEMORY=system``) from the facade's registry
  (``facade.shared_memory``), as the REST routes: status with the API token, register and
  unregister with the admin token;
- statistics from the same function as the REST routes (``facade.statistics``);
- CUDA shared memory, trace and log settings: ``UNIMPLEMENTED``, saying so.

The same server serves gRPC's standard health service (``facade.grpc_health``).

Tokens are the REST rules (``facade.auth.Guard``), read from the ``authorization`` metadata: the
API token for infer and metadata, the admin token for the repository; health is open. An
``InfernoError`` becomes the gRPC status of its HTTP status (``grpc_status``); anything else is
``INTERNAL`` naming only its class. Messages past ``INFERNO_MAX_BODY_BYTES`` are refused by grpc
itself with ``RESOURCE_EXHAUSTED``.

With ``inferno facade --workers N`` every process binds the same gRPC port: grpc sets
``SO_REUSEPORT`` on Linux, and the kernel spreads connections over the processes as it does
their HTTP sockets. A gRPC connection is long-lived, so a client stays with one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2_grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from common.errors import InfernoError
from common.logging import redact, request_id_var
from common.settings import FacadeSettings
from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.data_plane import DataPlane
from facade.errors import unexpected_error, v2_message
from facade.front import request_id_of
from facade.grpc_health import HealthServicer
from facade.grpc_protocol import GrpcCall, grpc_status, parameter_values
from facade.protocol import version_of
from facade.shared_memory import SharedMemoryRegistry
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
from facade.v2_routes import SERVER_NAME, SERVER_VERSION

__all__ = ["GrpcServer", "InferenceServicer"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = Any
"""A ``grpc.aio.ServicerContext`` (grpc ships no type hints)."""


def _unserved(what: str) -> Callable[[Any, Any, Context], Awaitable[None]]:
    """An RPC of a Triton extension Inferno lacks: ``UNIMPLEMENTED``, saying which."""
    async def refuse(self: Any, request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Inferno does not serve {what}")
    return refuse


class InferenceServicer:
    """Every RPC of ``inference.GRPCInferenceService`` (not a subclass of the generated
    servicer: grpc looks each method up by name, and an untyped base would hide these)."""

    def __init__(self, plane: DataPlane, view: ClusterView, admin: AdminService,
                 guard: Guard, *, extensions: list[str],
                 shared_memory: SharedMemoryRegistry) -> None:
        """``extensions``: what ``ServerMetadata`` lists (``facade.v2_models.extensions``)."""
        self._plane = plane
        self._view = view
        self._admin = admin
        self._guard = guard
        self._extensions = extensions
        self._shm = shared_memory

    async def ServerLive(self, request: Any, context: Context) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=self._view.ready()[0])

    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION,
                                             extensions=self._extensions)
        return await _answer(context, self._api(context, answer))

    async def ModelReady(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            return pb.ModelReadyResponse(ready=is_ready(self._view, request.name,
                                                         _version(request.version)))
        return await _answer(context, self._api(context, answer))

    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            version = _version(request.version)
            config = resolve(self._view, request.name, version)
            versions = [version] if version is not None else sorted(
                self._view.repository.versions(request.name))
            return json_format.ParseDict(metadata(config, versions), pb.ModelMetadataResponse())
        return await _answer(context, self._api(context, answer))

    async def ModelConfig(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            config = resolve(self._view, request.name, _version(request.version))
            return pb.ModelConfigResponse(
                config=json_format.ParseDict(config_of(config), mc.ModelConfig()))
        return await _answer(context, self._api(context, answer))

    async def ModelStatistics(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            # Triton's rule: no name is every model (the version, read all the same, unused);
            # no version is every version of the model.
            version = _version(request.version)
            stats = await model_statistics(self._view, request.name or None,
                                           version if request.name else None)
            return json_format.ParseDict(stats, pb.ModelStatisticsResponse())
        return await _answer(context, self._api(context, answer))

    async def ModelInfer(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            return await self._infer(request, context)
        return await _answer(context, self._api(context, answer))

    async def ModelStreamInfer(self, requests: AsyncIterator[Any],
                               context: Context) -> AsyncIterator[Any]:
        async def allowed() -> None:
            return None
        await _answer(context, self._api(context, allowed))
        answers: asyncio.Queue[Any] = asyncio.Queue()

        async def respond(request: Any) -> None:
            try:
                answer = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(request, context))
            except InfernoError as exc:
                answer = _stream_error(request, exc)
            except Exception as exc:
                log.exception("stream infer of %s failed unexpectedly", request.model_name)
                answer = _stream_error(request, unexpected_error(exc))
            answers.put_nowait(answer)

        async def read() -> None:
            async with asyncio.TaskGroup() as group:
                async for request in requests:
                    group.create_task(respond(request))

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: answers.put_nowait(None))  # every answer is queued
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # what ended the reading, if it failed
        finally:
            reader.cancel()

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            models = [m for m in repository_index(self._view)
                      if not request.ready or m["state"] == "READY"]
            return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())
        return await _answer(context, self._admin_call(context, answer))

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            await load_with_parameters(self._admin, self._view, request.model_name,
                                       parameter_values(request.parameters))
            return pb.RepositoryModelLoadResponse()
        return await _answer(context, self._admin_call(context, answer))

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            await unload_every_version(self._admin, self._view, request.model_name)
            return pb.RepositoryModelUnloadResponse()
        return await _answer(context, self._admin_call(context, answer))

    async def SystemSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            return json_format.ParseDict(
                {"regions": {r["name"]: r for r in self._shm.status(request.name)}},
                pb.SystemSharedMemoryStatusResponse())
        return await _answer(context, self._api(context, answer))

    async def SystemSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            self._shm.register(request.name, request.key, request.offset, request.byte_size)
            return pb.SystemSharedMemoryRegisterResponse()
        return await _answer(context, self._admin_call(context, answer))

    async def SystemSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        async def answer() -> Any:
            self._shm.unregister(request.name)
            return pb.SystemSharedMemoryUnregisterResponse()
        return await _answer(context, self._admin_call(context, answer))

    async def _infer(self, request: Any, context: Context) -> Any:
        remaining = context.time_remaining()
        deadline_ms = None if remaining is None else max(remaining * 1000, 1.0)
        # The request's own id names it in the logs, else the call's x-request-id metadata.
        given = request.id.encode() if request.id else _metadata(context, "x-request-id")
        request_id = request_id_of(given)
        token = request_id_var.set(request_id)
        try:
            return await self._plane.infer(request.model_name, None,
                                           GrpcCall(request, deadline_ms, self._shm),
                                           request_id)
        finally:
            request_id_var.reset(token)

    async def _api(self, context: Context, answer: Callable[[], Awaitable[T]]) -> T:
        self._guard.check_api(_metadata(context, "authorization"))
        return await answer()

    async def _admin_call(self, context: Context, answer: Callable[[], Awaitable[T]]) -> T:
        self._guard.check_admin(_metadata(context, "authorization"))
        return await answer()

    TraceSetting = _unserved("trace settings")
    LogSettings = _unserved("log settings")
    CudaSharedMemoryStatus = CudaSharedMemoryRegister = CudaSharedMemoryUnregister = (
        _unserved("CUDA shared memory"))


class GrpcServer:
    """The gRPC server of one facade: built with it, started by its launcher."""

    def __init__(self, settings: FacadeSettings, servicer: InferenceServicer,
                 health: HealthServicer) -> None:
        self._settings = settings
        self._servicer = servicer
        self._health = health
        self._server: Any = None
        self.port: int | None = None
        """The port it listens on once started; None while it does not."""
        self.tls = settings.tls_cert_file is not None

    async def start(self, port: int) -> int:
        """Listen on the facade's host and ``port``, over TLS when the facade has a certificate;
        the port bound (``port`` 0: a free one)."""
        host = self._settings.host
        credentials = _credentials(self._settings)
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self._settings.max_body_bytes),
            ("grpc.max_send_message_length", -1)])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound: int = (server.add_insecure_port(address) if credentials is None
                          else server.add_secure_port(address, credentials))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        await server.start()
        self._server, self.port = server, bound
        return bound

    async def aclose(self) -> None:
        """Stop: calls in progress get up to the default request timeout to finish."""
        if self._server is not None:
            await self._server.stop(self._settings.request_timeout_ms / 1000)
            self._server, self.port = None, None


def _credentials(settings: FacadeSettings) -> Any:
    """The server credentials of ``INFERNO_TLS_CERT_FILE`` and its key; None: plain gRPC."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())])


async def _answer(context: Context, work: Awaitable[T]) -> T:
    """``work``'s result, or the call aborted with the status of its error."""
    try:
        return await work
    except InfernoError as exc:
        error = exc
    except Exception as exc:
        log.exception("gRPC call failed unexpectedly")
        error = unexpected_error(exc)
    await context.abort(grpc_status(error), redact(v2_message(error)))
    raise AssertionError("context.abort returned")  # it raises, always


def _stream_error(request: Any, error: InfernoError) -> Any:
    """A stream's answer to ``request`` when it failed: the stream itself stays open."""
    return pb.ModelStreamInferResponse(error_message=redact(v2_message(error)),
                                       infer_response=pb.ModelInferResponse(id=request.id))


def _version(text: str) -> int | None:
    """A request's ``version``: "" for the active one (Triton's rule)."""
    return version_of(text, "version") if text else None


def _metadata(context: Context, key: str) -> bytes | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.encode("latin-1") if isinstance(value, str) else bytes(value)
    return None
