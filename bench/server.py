"""Start and stop one server process for a benchmark run: ``inferno serve`` (embedded, HTTP and
gRPC), or
any other command that serves ``/health/ready`` (``ServerProcess``; the plain FastAPI baseline of
``bench.plain_fastapi`` is one).

The server runs in its own session (see ``harness.process``): a Ctrl-C at the terminal reaches only
the bench process, which then stops the server itself (SIGTERM: uvicorn's graceful shutdown;
SIGKILL after 20 s). Access logs are off and the log level is WARNING: logging every request
would cost the server CPU that the benchmark is trying to measure.
"""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType
from typing import Self

from harness.process import free_port, spawn, stop_all, wait_ready

__all__ = ["QUIET_ENV", "EmbeddedServer", "ServerProcess", "Started", "free_port", "wait_ready"]

QUIET_ENV = {"INFERNO_ACCESS_LOG": "false", "INFERNO_LOG_LEVEL": "WARNING"}
"""No access log, warnings and errors only: what every started server process gets."""


class Started:
    """A context manager that starts a server on entry and always stops it on exit, a failed
    start included (``start`` and ``stop`` are the subclass's)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ServerProcess(Started):
    """A server subprocess on ``host:port``; a context manager that always stops it.

    Subclasses say what to run (``command``); readiness is ``GET /health/ready`` answering 200.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, repo: str | None = None,
                 ready_timeout_s: float = 120.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.repo = repo
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = spawn(self.command(), QUIET_ENV)
        wait_ready(self.base_url, self.ready_timeout_s, self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            # uvicorn shuts down gracefully on SIGTERM; before it runs, SIGTERM ends start-up.
            stop_all([process])


class EmbeddedServer(ServerProcess):
    """``inferno serve`` as a subprocess, its gRPC server on a free port too (never the default
    8001, which another server may hold), or off (``grpc=False``: ``--grpc-port 0``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, repo: str | None = None,
                 ready_timeout_s: float = 120.0, grpc: bool = True) -> None:
        super().__init__(host, port, repo, ready_timeout_s)
        self.grpc_port = free_port(host) if grpc else 0

    @property
    def grpc_addresses(self) -> tuple[str, ...]:
        """Its gRPC ``host:port``; none with gRPC off."""
        return (f"{self.host}:{self.grpc_port}",) if self.grpc_port else ()

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "inferno", "serve", "--host", self.host,
                   "--port", str(self.port), "--grpc-port", str(self.grpc_port)]
        if self.repo is not None:
            command += ["--repo", self.repo]
        return command
