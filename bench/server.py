"""Start and stop one server process for a benchmark run: ``inferno serve`` (embedded, HTTP and
gRPC) under uvicorn, as the ``inferno`` command runs it, or under granian (``bench.granian_app``,
``--compare-http-servers``), or any other command that serves ``/health/ready``
(``ServerProcess``; the plain FastAPI baseline of ``bench.plain_fastapi`` is one).

The server runs in its own session (see ``harness.process``): a Ctrl-C at the terminal reaches only
the bench process, which then stops the server itself (SIGTERM: the HTTP server's graceful
shutdown; SIGKILL after 20 s). Access logs are off and the log level is WARNING: logging every
request would cost the server CPU that the benchmark is trying to measure.
"""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType
from typing import Self

from harness.process import free_port, spawn, stop_all, wait_ready

__all__ = ["GRANIAN", "HTTP_SERVERS", "QUIET_ENV", "UVICORN", "EmbeddedServer", "ServerProcess",
           "Started", "free_port", "http_command", "listen_env", "wait_ready"]

QUIET_ENV = {"INFERNO_ACCESS_LOG": "false", "INFERNO_LOG_LEVEL": "WARNING"}
"""No access log, warnings and errors only: what every started server process gets."""

UVICORN, GRANIAN = "uvicorn", "granian"
HTTP_SERVERS = (UVICORN, GRANIAN)
"""What can serve Inferno's HTTP: uvicorn (the ``inferno`` command's) or granian."""

_GRANIAN_APPS = {"serve": "embedded", "facade": "facade"}
"""``inferno <role>`` → its app in ``bench.granian_app``."""

_GRANIAN_FLAGS = ("--interface", "asgi", "--http", "1", "--workers", "1", "--loop", "uvloop",
                  "--no-ws", "--no-access-log", "--log-level", "warning")
"""uvicorn's set-up in ``inferno.cli._uvicorn``, in granian's words: HTTP/1.1, one process on
uvloop, no websockets, no access log."""


def http_command(role: str, http: str) -> list[str]:
    """``inferno <role>`` (``serve`` or ``facade``) with ``http`` serving its HTTP; where it
    listens (``listen_env``) and every other setting come from the environment."""
    if http == UVICORN:
        return [sys.executable, "-m", "inferno", role]
    if http == GRANIAN:
        return [sys.executable, "-m", "granian", *_GRANIAN_FLAGS,
                f"bench.granian_app:{_GRANIAN_APPS[role]}"]
    raise ValueError(f"no HTTP server {http!r}: one of {', '.join(HTTP_SERVERS)}")


def listen_env(host: str, port: int) -> dict[str, str]:
    """Where an ``http_command`` listens: for Inferno's settings (its gRPC server binds the same
    host) and for granian, which reads its own variables."""
    return {"INFERNO_HOST": host, "INFERNO_PORT": str(port),
            "GRANIAN_HOST": host, "GRANIAN_PORT": str(port)}


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

    def env(self) -> dict[str, str]:
        """Environment variables of the process, besides ``QUIET_ENV``."""
        return {}

    def start(self) -> None:
        self.process = spawn(self.command(), {**QUIET_ENV, **self.env()})
        wait_ready(self.base_url, self.ready_timeout_s, self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            # uvicorn and granian shut down gracefully on SIGTERM; before, it ends start-up.
            stop_all([process])


class EmbeddedServer(ServerProcess):
    """``inferno serve`` as a subprocess, its HTTP served by ``http`` (uvicorn: the ``inferno``
    command; granian: ``bench.granian_app``), its gRPC server on a free port too (never the
    default 8001, which another server may hold), or off (``grpc=False``: port 0)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, repo: str | None = None,
                 ready_timeout_s: float = 120.0, grpc: bool = True, http: str = UVICORN) -> None:
        super().__init__(host, port, repo, ready_timeout_s)
        self.grpc_port = free_port(host) if grpc else 0
        self.http = http

    @property
    def grpc_addresses(self) -> tuple[str, ...]:
        """Its gRPC ``host:port``; none with gRPC off."""
        return (f"{self.host}:{self.grpc_port}",) if self.grpc_port else ()

    def command(self) -> list[str]:
        return http_command("serve", self.http)

    def env(self) -> dict[str, str]:
        env = {**listen_env(self.host, self.port), "INFERNO_GRPC_PORT": str(self.grpc_port)}
        if self.repo is not None:
            env["INFERNO_REPO_ROOT"] = self.repo
        return env
