"""The facade: a stateless HTTP front that validates requests and queues them for workers.

``Facade.create`` wires the services to a ``Broker`` and a ``StateStore`` (whichever
implementations the launcher chose) and starts the cluster view; ``facade.app`` is the ASGI app,
``facade.grpc`` the gRPC server on the same data plane and views (started by the launcher).
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from common import heap
from common.metrics import FacadeMetrics
from common.model.repository import ModelRepository
from common.settings import FacadeSettings
from common.state.store import StateStore
from common.supervisor import Supervisor
from common.transport.broker import Broker
from facade.admin_service import AdminService
from facade.auth import Guard
from facade.cluster_view import ClusterView
from facade.console import console_router
from facade.data_plane import DataPlane
from facade.errors import install_error_handlers
from facade.front import Front
from facade.grpc_server import GrpcServer, InferenceServicer
from facade.health import health_router
from facade.openapi import document_predict_routes
from facade.queue_stats import QueueWatch
from facade.v1_routes import v1_router
from facade.v2_routes import v2_router

__all__ = ["Facade"]


class Facade:
    def __init__(self, app: ASGIApp, api: FastAPI, view: ClusterView,
                 queues: QueueWatch, grpc: GrpcServer) -> None:
        self.app = app
        """The ASGI app to serve: ``Front`` (request context, predict fast path) → FastAPI."""
        self.api = api
        self.grpc = grpc
        """The gRPC server on the same services: its launcher starts it (``grpc.start(port)``,
        ``INFERNO_GRPC_PORT``), ``aclose`` stops it."""
        self.view = view
        self.queues = queues
        """The broker's queues, read in the background: ``queues.snapshot()``."""

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
        admin = AdminService(store, view, settings.admin_timeout_s)
        guard = Guard.from_settings(settings)
        api = FastAPI(title="Inferno", version="0.1.0",
                      description="Inference server for PyTorch models")
        install_error_handlers(api)
        api.include_router(v1_router(admin, view, guard))
        api.include_router(v2_router(admin, view, guard))
        api.include_router(health_router(view, registry))
        api.include_router(console_router(view, queues, registry, guard))
        document_predict_routes(api)
        app = Front(api, plane, max_body_bytes=settings.max_body_bytes,
                    access_log=settings.access_log, guard=guard,
                    compress_min_bytes=settings.compress_min_bytes)
        grpc = GrpcServer(settings, InferenceServicer(plane, view, admin, guard))
        if settings.gc_freeze:
            heap.settle()  # the application is built: what it holds is here to stay
        return cls(app, api, view, queues, grpc)

    async def aclose(self) -> None:
        await self.grpc.aclose()
        await self.queues.aclose()
        await self.view.aclose()
