"""The ``inferno`` command: the only place that imports both ``facade`` and ``worker``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvicorn

from common.config import FacadeSettings, WorkerSettings
from common.logging import configure_logging
from inferno.embedded import Embedded

__all__ = ["main"]

log = logging.getLogger("inferno")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferno", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="facade + worker in one process, no broker or Redis needed")
    serve.add_argument("--host", help="bind address (INFERNO_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (INFERNO_PORT, default 8000)")
    serve.add_argument("--repo", help="model repository (INFERNO_REPO_ROOT, default models)")
    serve.add_argument("--device", choices=["cpu", "cuda", "auto"], help="INFERNO_DEVICE")
    serve.add_argument("--preload", help="models to load at start, comma-separated, * for all")
    return parser


def _apply(args: argparse.Namespace) -> None:
    """Command-line flags win over the environment: they are set as its variables."""
    for flag, env in (("host", "HOST"), ("port", "PORT"), ("repo", "REPO_ROOT"),
                      ("device", "DEVICE"), ("preload", "PRELOAD")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"INFERNO_{env}"] = str(value)


async def _serve() -> None:
    facade_settings, worker_settings = FacadeSettings(), WorkerSettings()
    import torch

    torch.set_num_threads(worker_settings.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    embedded = await Embedded.start(facade_settings, worker_settings)
    server = uvicorn.Server(uvicorn.Config(
        embedded.facade.app, host=facade_settings.host, port=facade_settings.port,
        http="httptools", lifespan="off", access_log=False, log_config=None,
        timeout_graceful_shutdown=int(worker_settings.drain_timeout_s)))
    log.info("serving %s on http://%s:%d (embedded mode)", facade_settings.repo_root,
             facade_settings.host, facade_settings.port)
    # uvicorn raises the signal that stopped it again once it has stopped; absorb it so the
    # worker can still drain its batches and the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        await server.serve()
    finally:
        await embedded.aclose()
    log.info("stopped")


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # uvloop has no Windows build
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _apply(args)
    common = FacadeSettings()
    configure_logging(common.log_level, common.log_json)
    if args.command == "serve":
        _run(_serve)
