"""Inferno under granian, for ``python -m bench --compare-http-servers`` only (bench-only, like
``bench.plain_fastapi``): two ASGI apps for granian's ``--interface asgi``.

    python -m granian --interface asgi ... bench.granian_app:embedded   # as `inferno serve`
    python -m granian --interface asgi ... bench.granian_app:facade     # as `inferno facade`

granian speaks the ASGI lifespan protocol: at startup each app builds Inferno the way
``inferno/cli.py`` does for uvicorn (settings from the environment, torch threads, the
embedded worker or the broker and store, ``GcPauses``, the gRPC server) and from then on hands
every HTTP scope to the facade's FastAPI app; at shutdown it closes what it built. What uvicorn
gets from the command (stop-signal handling, the hard stop, the drain wait) is granian's own
here. The private helpers of ``inferno.cli`` are imported so both servers start the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from common.heap import GcPauses
from common.logging import configure_logging
from common.metrics import process_registry
from common.settings import FacadeSettings, WorkerSettings
from inferno.cli import _set_torch_threads, _start_grpc, start_facade

__all__ = ["InfernoApp", "embedded", "facade"]

Close = Callable[[], Awaitable[None]]
Start = Callable[[], Awaitable[tuple[ASGIApp, Close]]]


class InfernoApp:
    """An ASGI app whose lifespan starts Inferno (``start``: the facade's app and how to close
    it) and whose HTTP scopes go to that facade."""

    def __init__(self, start: Start) -> None:
        self._start = start
        self._app: ASGIApp | None = None
        self._close: Close | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self._app is None:  # granian serves no request before startup completes
            raise RuntimeError("Inferno is not started: granian ran without its lifespan")
        else:
            await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._app, self._close = await self._start()
                except (Exception, SystemExit) as exc:  # told to granian, which exits
                    await send({"type": "lifespan.startup.failed",
                                "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._close is not None:
                    await self._close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _embedded() -> tuple[ASGIApp, Close]:
    """``inferno serve``'s start-up (``inferno.cli._serve``)."""
    from inferno.embedded import Embedded  # the worker side, as in inferno.cli

    facade_settings, worker_settings = FacadeSettings(), WorkerSettings()
    configure_logging(facade_settings.log_level, facade_settings.log_json)
    _set_torch_threads(worker_settings)
    started = await Embedded.start(facade_settings, worker_settings)
    GcPauses(started.registry).start()
    await _start_grpc(started.facade, facade_settings)
    return started.facade.app, started.aclose


async def _facade() -> tuple[ASGIApp, Close]:
    """``inferno facade``'s start-up, one process (``inferno.cli._facade``)."""
    settings = FacadeSettings()
    configure_logging(settings.log_level, settings.log_json)
    started, close = await start_facade(settings, process_registry())
    await _start_grpc(started, settings)
    return started.app, close


embedded = InfernoApp(_embedded)
facade = InfernoApp(_facade)
