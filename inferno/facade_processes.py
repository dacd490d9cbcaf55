"""``inferno facade --workers N``: N facade processes serving one port, and their parent.

A facade is one event loop, so one process uses one core; N of them use N. The parent does no
serving. It

- prepares the metrics directory: ``PROMETHEUS_MULTIPROC_DIR`` from the environment, its
  ``*.db`` files of a previous run removed, or else a fresh temporary directory (removed at
  exit), set in its environment for the children: prometheus-client picks its value storage
  from it when it is imported, so ``/metrics`` from any child tells of every child
  (``common.metrics.multiprocess_registry``);
- opens one listening socket per child on the same address and port with ``SO_REUSEPORT``, so
  that the kernel spreads new connections evenly over the children (one shared socket leaves
  the spreading to whichever process wakes first, which under light load is mostly the same
  one); the first binds the configured port (0: any), the others the port it got;
- starts the children with multiprocessing's ``spawn`` (a fresh interpreter each: nothing of
  the parent's state, no fork of threads), each running the facade on its socket and setting
  its ``started`` event once connected to the broker and the store; the parent keeps its copy
  of every socket, so that a replacement can take one over;
- forwards SIGTERM and SIGINT to the children as SIGTERM (a graceful stop: in-flight requests
  finish); a child whose parent dies stops the same way (``watch_parent``);
- replaces a child that exits, before any stop signal, after it had started (a crash): the new
  one serves the same socket, and the connections the kernel handed that socket meanwhile wait
  in its backlog instead of being refused. A child that exits before it started (bad settings,
  a broker or store out of reach) makes the parent stop the others and exit non-zero: a
  partial facade is not left serving, and a replacement that cannot start ends a crash loop
  the same way.

Each child is a whole facade (its broker connection, its own exclusive reply queue named by
host and pid, its view of the state store, its queue watch). Linux spreads connections over
``SO_REUSEPORT`` sockets; platforms without it are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from common.config import FacadeSettings

__all__ = ["METRICS_DIR_VARIABLE", "serve_processes", "watch_parent"]

log = logging.getLogger("inferno")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
BACKLOG = 2048  # uvicorn's default

ChildMain = Callable[[FacadeSettings, socket.socket, Event], None]
"""What a child runs: the facade on the socket it is handed, setting the event once it has
started (a module-level function: spawn imports it by name)."""


@dataclass(frozen=True, slots=True)
class _Child:
    index: int
    """Its socket's."""
    process: BaseProcess
    started: Event
    """Set by the child once connected: exiting after it is a crash (replaced), before it a
    failed start (the group stops)."""


def serve_processes(settings: FacadeSettings, count: int, child: ChildMain) -> int:
    """Run ``count`` children of ``child`` on one port until they have all exited; the exit
    status: 0 when every child exited 0 after a stop signal, else 1."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit("inferno facade --workers needs SO_REUSEPORT (Linux)")
    metrics_dir, made = _metrics_dir()
    sockets = _listeners(settings.host, settings.port, count)
    port = sockets[0].getsockname()[1]
    context = multiprocessing.get_context("spawn")
    running: dict[int, _Child] = {}
    """Sentinel → the child, for every child started and not yet reaped."""
    stopping = False

    def spawn(index: int) -> _Child:
        started = context.Event()
        process = context.Process(target=child, args=(settings, sockets[index], started),
                                  name=f"facade-{index}")
        process.start()
        running[process.sentinel] = entry = _Child(index, process, started)
        if stopping:
            stop()  # a signal came while it was starting
        return entry

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for entry in list(running.values()):
            if entry.process.pid is not None and entry.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.process.pid, signal.SIGTERM)

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping %d facade processes", signal.Signals(sig).name, count)
        stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed: list[str] = []
    try:
        first = [spawn(index) for index in range(count)]
        log.info("facade on http://%s:%d: %d processes %s", settings.host, port, count,
                 ",".join(str(c.process.pid) for c in first))
        while running:
            ready = multiprocessing.connection.wait(list(running))
            for sentinel in [s for s in list(running) if s in ready]:
                entry = running.pop(sentinel)
                process = entry.process
                process.join()  # its sentinel closed: it is exiting
                mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                what = f"{process.name} (pid {process.pid}) exited {process.exitcode}"
                if stopping:
                    if process.exitcode != 0:
                        failed.append(what)
                elif entry.started.is_set():
                    process.close()  # its pipe: a crash loop must not leak descriptors
                    replacement = spawn(entry.index)
                    log.error("facade process %s: started pid %s on its socket", what,
                              replacement.process.pid)
                else:
                    failed.append(f"{what} before it started")
                    log.error("facade process %s before it started: stopping the others", what)
                    stop()
    finally:
        stop()
        for entry in list(running.values()):
            if entry.process.pid is not None:
                entry.process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if failed:
        log.error("facade processes failed: %s", "; ".join(failed))
        return 1
    log.info("stopped")
    return 0


def _metrics_dir() -> tuple[Path, bool]:
    """The children's metrics directory, emptied of a previous run's files, and whether it was
    made here (then it is removed at exit)."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="inferno-metrics-"))
    # Written for the spawned children, which read it when prometheus-client is imported.
    os.environ[METRICS_DIR_VARIABLE] = str(path)
    return path, True


def _listeners(host: str, port: int, count: int) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # the first's port (0: the kernel's choice) for all
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise SystemExit(f"inferno facade: cannot listen on {host}:{port}: {exc}") from None
    return sockets


def watch_parent(on_gone: Callable[[], None]) -> None:
    """In a child: call ``on_gone`` (on the running loop) once the parent process is gone, so
    that a parent killed outright does not leave its children serving."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return
    loop = asyncio.get_running_loop()

    def gone() -> None:
        loop.remove_reader(sentinel)
        log.warning("the parent process is gone: stopping")
        on_gone()

    loop.add_reader(sentinel, gone)
