"""The facade: a stateless HTTP front that validates requests and queues them for workers.

``Facade.create`` wires the services to a ``Broker`` and a ``StateStore`` (whichever
implementations the launcher chose) and starts the cluster view; ``facade.app`` is the ASGI app,
``facade.grpc`` the gRPC server on the same data plane and views (started by the launcher).
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from common import heap
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.settings import FacadeSettings, SharedMemoryKind
from common.state.store import StateStore
from common.supervisor import Supervisor
from common.transport.broker import Broker
from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.console import console_router
from facade.data_plane import DataPlane
from facade.encoding import COMPRESS_LEVEL
from facade.errors import install_error_handlers
from facade.front import PREDICT_ROUTES, Front
from facade.grpc_health import HealthServicer
from facade.grpc_server import GrpcServer, InferenceServicer
from facade.health import health_router
from facade.openai_protocol import EMBEDDINGS_PATH, OpenAIProtocol
from facade.openai_routes import openai_router
from facade.openapi import document_predict_routes
from facade.queue_stats import QueueWatch
from facade.shared_memory import SharedMemoryRegistry
from facade.shared_memory_routes import shared_memory_router
from facade.v1_routes import v1_router
from facade.v2_models import extensions
from facade.v2_protocol import V2, V2Protocol
from facade.v2_routes import v2_router

__all__ = ["Facade"]


class Facade:
    def __init__(self, app: ASGIApp, api: FastAPI, view: ClusterView,
                 queues: QueueWatch, grpc: GrpcServer,
                 shared_memory: SharedMemoryRegistry) -> None:
        self.app = app
        """The ASGI app to serve: ``Front`` (request context, predict fast path) → FastAPI."""
        self.api = api
        self.grpc = grpc
        """The gRPC server on the same services: its launcher starts it (``grpc.start(port)``,
        ``INFERNO_GRPC_PORT``), ``aclose`` stops it."""
        self.view = view
        self.queues = queues
        """The broker's queues, read in the background: ``queues.snapshot()``."""
        self.shared_memory = shared_memory
        """The system shared memory regions clients registered; unmapped by ``aclose``."""

    @classmethod
    async def create(cls, settings: FacadeSettings, broker: Broker, store: StateStore,
                     repository: ModelRepository, registry: CollectorRegistry,
                     supervisor: Supervisor | None = None) -> Facade:
        """``supervisor``: runs the view's background loops (a new one by default); its loops
        that are down, the facade's or any other owner's, make the facade not ready."""
        metrics = FacadeMetrics(registry, settings.metrics_buckets)
        view = ClusterView(store, repository, metrics, settings.heartbeat_interval_s / 2,
                           grace_s=settings.heartbeat_ttl_s, supervisor=supervisor)
        await view.start()
        queues = QueueWatch(broker, view, metrics, settings.queue_stats_interval_s,
                            view.supervisor)
        await queues.start()
        plane = DataPlane(settings, broker, view, metrics)
        admin = AdminService(store, view, settings.admin_timeout_s,
                             allow_model_files=settings.allow_model_files)
        guard = Guard.from_settings(settings)
        shared_memory = SharedMemoryRegistry(settings.shared_memory is SharedMemoryKind.SYSTEM)
        # v2 predicts read and write this facade's regions: the route table's V2 holds none.
        routes = [replace(r, protocol=V2Protocol(shared_memory)) if r.protocol is V2 else r
                  for r in PREDICT_ROUTES]
        grpc = GrpcServer(settings, InferenceServicer(
            plane, view, admin, guard, extensions=extensions(settings, http=False),
            shared_memory=shared_memory), HealthServicer(view))
        api = FastAPI(title="Inferno", version="0.1.0",
                      description="Inference server for PyTorch models")
        install_error_handlers(api)
        # The predict answers are the front's to compress (facade.encoding); every other route's
        # (statistics, metadata, /metrics, the OpenAPI document) here, by the same threshold.
        api.add_middleware(GZipMiddleware, minimum_size=settings.compress_min_bytes,
                           compresslevel=COMPRESS_LEVEL)
        api.include_router(v1_router(admin, view, guard))
        api.include_router(v2_router(admin, view, guard,
                                     extensions=extensions(settings, http=True)))
        api.include_router(shared_memory_router(shared_memory, guard))
        api.include_router(openai_router(view, guard))
        api.include_router(health_router(view, registry))
        api.include_router(console_router(view, queues, registry, guard, grpc))
        document_predict_routes(api)
        app = Front(api, plane, max_body_bytes=settings.max_body_bytes,
                    access_log=settings.access_log, guard=guard, routes=routes,
                    compress_min_bytes=settings.compress_min_bytes,
                    body_routes={EMBEDDINGS_PATH: OpenAIProtocol(settings.openai_max_inputs,
                                                                 settings.openai_truncate)})
        if settings.gc_freeze:
            heap.settle()  # the application is built: what it holds is here to stay
        return cls(app, api, view, queues, grpc, shared_memory)

    async def aclose(self) -> None:
        await self.grpc.aclose()
        self.shared_memory.close()
        await self.queues.aclose()
        await self.view.aclose()
