"""The ``inferno`` command: the only place that imports both ``facade`` and ``worker``.

``inferno serve``: facade + worker in one process (embedded: in-process broker and state).
``inferno facade`` / ``inferno worker``: the distributed roles, over RabbitMQ and Redis.
``inferno facade --workers N``: N facade processes on one port (``inferno.facade_processes``).
``inferno worker --burst``: drain the queues of the models it serves, then exit (a batch job).

Every role's stop signal arms a ``HardStop`` (the process ends even if its loop is stuck), and
SIGUSR1 makes any of these processes write its threads' stacks on stderr (``faulthandler``).

Each role's settings are read from the environment with the command line's flags over them
(``FacadeSettings(**flags)``: init arguments win) and handed down as objects; the process
environment is never written, except ``PROMETHEUS_MULTIPROC_DIR`` by the parent of
``--workers``, for its children (prometheus-client reads it from the environment only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from prometheus_client import CollectorRegistry, start_http_server

from common.backends import create_broker, create_state_store
from common.heap import GcPauses
from common.logging import configure_logging
from common.metrics import (
    WorkerMetrics,
    multiprocess_registry,
    process_registry,
    supervisor_for,
)
from common.model.repository import ModelRepository
from common.settings import CommonSettings, FacadeSettings, WorkerSettings
from facade.app import Facade
from inferno.facade_processes import Heartbeat, die_with_parent, serve_processes
from inferno.hard_stop import HardStop

if TYPE_CHECKING:
    from worker.reconciler import Reconciler

__all__ = ["main", "parse_args", "settings_from"]

log = logging.getLogger("inferno")

S = TypeVar("S", bound=CommonSettings)

_FLAGS = (("host", "host"), ("port", "port"), ("grpc_port", "grpc_port"), ("repo", "repo_root"),
          ("device", "device"), ("preload", "preload"), ("models", "models"), ("burst", "burst"),
          ("workers", "facade_processes"))
"""Command-line flag → the settings field it sets."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferno", description="Inferno: an inference server for PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="facade + worker in one process, no broker or Redis needed")
    facade = commands.add_parser(
        "facade", help="the HTTP facade (needs INFERNO_BROKER_URL and INFERNO_REDIS_URL)")
    worker = commands.add_parser(
        "worker", help="a worker (needs INFERNO_BROKER_URL and INFERNO_REDIS_URL)")
    for command in (serve, facade):
        command.add_argument("--host", help="bind address (INFERNO_HOST, default 127.0.0.1)")
        command.add_argument("--port", type=int, help="port (INFERNO_PORT, default 8000)")
        command.add_argument("--grpc-port", type=int,
                             help="gRPC port, Open Inference Protocol (INFERNO_GRPC_PORT, "
                                  "default 8001, 0: off)")
    for command in (serve, facade, worker):
        command.add_argument("--repo", help="model repository (INFERNO_REPO_ROOT)")
    for command in (serve, worker):
        command.add_argument("--device", choices=["cpu", "cuda", "auto"], help="INFERNO_DEVICE")
        command.add_argument("--preload", help="models to load at start, comma-separated, * all")
    facade.add_argument(
        "--workers", type=_positive, metavar="N",
        help="run N facade processes on the port (INFERNO_FACADE_PROCESSES, default 1): each "
             "a whole facade with its own connections, the kernel spreading new connections "
             "over them (SO_REUSEPORT); "
             "/metrics from any of them tells of all (PROMETHEUS_MULTIPROC_DIR, a fresh "
             "temporary directory unless set); SIGTERM stops them all gracefully")
    worker.add_argument("--models", help="models this worker serves, comma-separated (* all)")
    worker.add_argument("--burst", action="store_true", default=None,
                        help="drain the queues of the models it serves, then exit (INFERNO_BURST)")
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def settings_from(cls: type[S], args: argparse.Namespace) -> S:
    """The role's settings: its environment variables, with the flags given over them."""
    flags = {field: getattr(args, flag) for flag, field in _FLAGS
             if field in cls.model_fields and getattr(args, flag, None) is not None}
    return cls(**flags)


def _require_cluster(settings: CommonSettings, role: str) -> None:
    if settings.broker_url is None or settings.redis_url is None:
        sys.exit(f"inferno {role} needs INFERNO_BROKER_URL (RabbitMQ) and INFERNO_REDIS_URL "
                 f"(Redis); for one process without them, run `inferno serve`")


def _set_torch_threads(settings: WorkerSettings) -> None:
    import torch

    torch.set_num_threads(settings.intra_op_threads)


def _absorb_stop_signals() -> None:
    # uvicorn raises the signal that stopped it again once it has stopped; absorb it so the
    # worker can still drain its batches and the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)


class _Server(uvicorn.Server):
    """uvicorn's server, whose stop signal also arms a hard stop."""

    def __init__(self, config: uvicorn.Config, hard_stop: HardStop) -> None:
        super().__init__(config)
        self._hard_stop = hard_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._hard_stop.arm()
        super().handle_exit(sig, frame)


def _uvicorn(app: Any, settings: FacadeSettings, drain_s: float,
             drains: int = 1) -> uvicorn.Server:
    """uvicorn on ``app``, waiting ``drain_s`` for requests in progress when stopped; the
    process's hard stop allows ``drains`` such waits (embedded mode's worker drains after)."""
    hard_stop = HardStop(drain_s * drains)
    hard_stop.start()
    return _Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, http="httptools", lifespan="off",
        access_log=False, log_config=None,
        ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
        timeout_graceful_shutdown=math.ceil(drain_s)), hard_stop)


def _scheme(settings: FacadeSettings) -> str:
    return "http" if settings.tls_cert_file is None else "https"


async def _serve(facade_settings: FacadeSettings, worker_settings: WorkerSettings) -> None:
    from inferno.embedded import Embedded  # the worker side, here only: see inferno/__init__

    _set_torch_threads(worker_settings)
    embedded = await Embedded.start(facade_settings, worker_settings)
    GcPauses(embedded.registry).start()
    server = _uvicorn(embedded.facade.app, facade_settings, worker_settings.drain_timeout_s,
                      drains=2)
    log.info("serving %s on %s://%s:%d (embedded mode)", facade_settings.repo_root,
             _scheme(facade_settings), facade_settings.host, facade_settings.port)
    _absorb_stop_signals()
    try:
        await _start_grpc(embedded.facade, facade_settings)
        await server.serve()
    finally:
        await embedded.aclose()
    log.info("stopped")


async def start_facade(settings: FacadeSettings, registry: CollectorRegistry
                       ) -> tuple[Facade, Callable[[], Awaitable[None]]]:
    """A facade connected to the cluster, its metrics in ``registry``, and what closes it and
    its connections."""
    _require_cluster(settings, "facade")
    repository = ModelRepository(settings.repo_root)
    repository.scan()
    broker, store = create_broker(settings), create_state_store(settings)
    await broker.start()
    await store.start()
    GcPauses(registry).start()
    facade = await Facade.create(settings, broker, store, repository, registry,
                                 supervisor_for(registry))

    async def close() -> None:
        await facade.aclose()
        await store.aclose()
        await broker.aclose()

    return facade, close


async def _facade(settings: FacadeSettings, sock: socket.socket | None = None,
                  heartbeat: Heartbeat | None = None) -> None:
    """One facade process: alone on its port, or (``sock``) one of ``--workers``, whose
    ``heartbeat`` starts once connected: its parent tells a crash from a failed start by it,
    and a stuck loop."""
    facade, close = await start_facade(
        settings, process_registry() if sock is None else multiprocess_registry())
    # In-flight requests may take up to their deadline to finish.
    server = _uvicorn(facade.app, settings, drain_s=settings.request_timeout_ms / 1000)
    beating = None
    if heartbeat is None:
        log.info("facade on %s://%s:%d", _scheme(settings), settings.host, settings.port)
    else:
        beating = asyncio.create_task(heartbeat.beat(), name="heartbeat")
        log.info("facade process %d started", os.getpid())
    _absorb_stop_signals()
    try:
        await _start_grpc(facade, settings)
        await server.serve(sockets=None if sock is None else [sock])
    finally:
        await close()
        if beating is not None:
            beating.cancel()  # exiting on purpose: no stall to watch for any more
    log.info("stopped")


async def _start_grpc(facade: Facade, settings: FacadeSettings) -> None:
    """The facade's gRPC server on ``INFERNO_GRPC_PORT``, unless 0. Every process of
    ``--workers`` binds the same port: grpc sets SO_REUSEPORT on Linux."""
    if settings.grpc_port:
        await facade.grpc.start(settings.grpc_port)
        log.info("gRPC%s on %s:%d", " (TLS)" if settings.tls_cert_file else "",
                 settings.host, settings.grpc_port)


def _facade_process(settings: FacadeSettings, sock: socket.socket,
                    heartbeat: Heartbeat) -> None:
    """A child of ``inferno facade --workers``, in a process of its own (spawned)."""
    die_with_parent()
    _set_up_process(settings)
    _run(functools.partial(_facade, settings, sock, heartbeat))


async def _worker(settings: WorkerSettings) -> None:
    from worker.reconciler import Reconciler  # the worker side, here only: see inferno/__init__

    _require_cluster(settings, "worker")
    _set_torch_threads(settings)
    registry = process_registry()
    GcPauses(registry).start()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=registry)
    repository = ModelRepository(settings.repo_root)
    repository.scan()
    broker, store = create_broker(settings), create_state_store(settings)
    await broker.start()
    await store.start()
    worker = Reconciler(settings, broker, store, repository,
                        WorkerMetrics(registry, settings.metrics_buckets),
                        supervisor_for(registry))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    hard_stop = HardStop(settings.drain_timeout_s)
    hard_stop.start()

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        # A Python-level handler, not the loop's: it runs even while the loop is stuck.
        hard_stop.arm()
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_stop)
    failed: dict[str, str] = {}
    try:
        if settings.burst:
            failed = await _burst(worker, stop)
        else:
            await worker.start()
            log.info("worker %s serving %s", worker.worker_id, ",".join(settings.models))
            await stop.wait()
            log.info("stopping: finishing in-flight batches")
            await worker.stop()
    finally:
        await store.aclose()
        await broker.aclose()
    log.info("stopped")
    if failed:
        sys.exit("inferno worker --burst: not drained, could not load "
                 + "; ".join(f"{key} ({why})" for key, why in sorted(failed.items())))


async def _burst(worker: Reconciler, stop: asyncio.Event) -> dict[str, str]:
    """Drain the queues, unless a stop signal comes first: then stop as gracefully as ever."""
    log.info("worker %s draining %s (burst)", worker.worker_id,
             ",".join(worker.settings.models))
    burst = asyncio.create_task(worker.burst(stop), name="worker burst")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({burst, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if burst.done():
        return burst.result()
    log.info("stopping: finishing in-flight batches")
    burst.cancel()  # a cancelled burst still stops the worker gracefully
    with contextlib.suppress(asyncio.CancelledError):
        await burst
    return {}


def _set_up_process(settings: CommonSettings) -> None:
    configure_logging(settings.log_level, settings.log_json)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the stacks, even when stuck


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # uvloop has no Windows build
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    common = settings_from(CommonSettings, args)
    _set_up_process(common)
    command: Callable[[], Coroutine[Any, Any, None]]
    if args.command == "serve":
        command = functools.partial(_serve, settings_from(FacadeSettings, args),
                                    settings_from(WorkerSettings, args))
    elif args.command == "facade":
        settings = settings_from(FacadeSettings, args)
        if settings.facade_processes > 1:
            _require_cluster(settings, "facade")
            sys.exit(serve_processes(settings, settings.facade_processes, _facade_process))
        command = functools.partial(_facade, settings)
    else:
        command = functools.partial(_worker, settings_from(WorkerSettings, args))
    _run(command)
