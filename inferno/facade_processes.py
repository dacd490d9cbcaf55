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
  the parent's state, no fork of threads), each running the facade on its socket; the parent
  keeps its copy of every socket, so that a replacement can take one over;
- watches each child's ``Heartbeat``: its event loop writes the time into memory the parent
  shares every ``BEAT_S``. A child whose loop has not run for ``facade_stall_timeout_s``
  (deadlocked, spinning, SIGSTOPped) is sent SIGUSR1 (its threads' stacks on stderr, for the
  post-mortem), then SIGKILL, and replaced: a stuck child would keep taking its share of new
  connections and answer none;
- forwards SIGTERM and SIGINT to the children as SIGTERM (a graceful stop: in-flight requests
  finish; a child whose loop is stuck ends by its ``HardStop`` or by the stall watch);
- replaces a child that exits, before any stop signal, after it had started (a crash): the new
  one serves the same socket, and the connections the kernel handed that socket meanwhile wait
  in its backlog instead of being refused. A child that exits before it started (bad settings,
  a broker or store out of reach) makes the parent stop the others and exit non-zero: a
  partial facade is not left serving, and a replacement that cannot start ends a crash loop
  the same way.

A child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a parent
killed outright does not leave children serving, even children whose loop is stuck.

Each child is a whole facade (its broker connection, its own exclusive reply queue named by
host and pid, its view of the state store, its queue watch). Linux only: it spreads connections
over ``SO_REUSEPORT`` sockets, and has ``PR_SET_PDEATHSIG``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from common.settings import FacadeSettings

__all__ = ["BEAT_S", "METRICS_DIR_VARIABLE", "Heartbeat", "die_with_parent", "serve_processes"]

log = logging.getLogger("inferno")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
BACKLOG = 2048  # uvicorn's default
BEAT_S = 0.25
"""How often a child's event loop beats, and how often the parent looks."""
DUMP_S = 0.5
"""Between SIGUSR1 (the stacks) and SIGKILL to a stalled child."""
_PR_SET_PDEATHSIG = 1


class Heartbeat:
    """A child's event loop as its parent sees it: the ``time.monotonic()`` of its latest turn,
    in memory both share (on Linux one clock for every process). 0: not started yet (an exit
    then is a failed start); infinity: not watched any more (stopping on purpose, or killed)."""

    def __init__(self, context: SpawnContext) -> None:
        self._at = context.RawValue("d", 0.0)

    @property
    def started(self) -> bool:
        return bool(self._at.value > 0)

    def stalled_for(self) -> float:
        """Seconds since the loop last beat (0 while not watched)."""
        at: float = self._at.value
        return 0.0 if at == 0 or math.isinf(at) else time.monotonic() - at

    def retire(self) -> None:
        self._at.value = math.inf

    async def beat(self) -> None:
        """In the child, on its loop, from the moment it serves until cancelled (then it
        retires: the child is exiting on purpose)."""
        try:
            while True:
                self._at.value = time.monotonic()
                await asyncio.sleep(BEAT_S)
        finally:
            self.retire()


ChildMain = Callable[[FacadeSettings, socket.socket, Heartbeat], None]
"""What a child runs: the facade on the socket it is handed, beating once it has started (a
module-level function: spawn imports it by name)."""


@dataclass(frozen=True, slots=True)
class _Child:
    index: int
    """Its socket's."""
    process: BaseProcess
    heartbeat: Heartbeat


def serve_processes(settings: FacadeSettings, count: int, child: ChildMain) -> int:
    """Run ``count`` children of ``child`` on one port until they have all exited; the exit
    status: 0 when every child exited 0 after a stop signal, else 1."""
    if sys.platform != "linux":
        raise SystemExit("inferno facade --workers needs Linux (SO_REUSEPORT, PR_SET_PDEATHSIG)")
    metrics_dir, made = _metrics_dir()
    sockets = _listeners(settings.host, settings.port, count)
    port = sockets[0].getsockname()[1]
    context = multiprocessing.get_context("spawn")
    running: dict[int, _Child] = {}
    """Sentinel → the child, for every child started and not yet reaped."""
    stopping = False

    def spawn(index: int) -> _Child:
        heartbeat = Heartbeat(context)
        process = context.Process(target=child, args=(settings, sockets[index], heartbeat),
                                  name=f"facade-{index}")
        process.start()
        running[process.sentinel] = entry = _Child(index, process, heartbeat)
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
            ready = multiprocessing.connection.wait(list(running), timeout=BEAT_S)
            for entry in list(running.values()):
                stalled = entry.heartbeat.stalled_for()
                if stalled > settings.facade_stall_timeout_s:
                    _kill_stalled(entry, stalled)
            for sentinel in [s for s in list(running) if s in ready]:
                entry = running.pop(sentinel)
                process = entry.process
                process.join()  # its sentinel closed: it is exiting
                mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                what = f"{process.name} (pid {process.pid}) exited {process.exitcode}"
                if stopping:
                    if process.exitcode != 0:
                        failed.append(what)
                elif entry.heartbeat.started:
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


def _kill_stalled(entry: _Child, stalled: float) -> None:
    pid = entry.process.pid
    if pid is None:  # not started: nothing beats yet
        return
    entry.heartbeat.retire()
    log.error("facade process %s (pid %d) stopped answering: its event loop has not run for "
              "%.1f s; killing it (its threads' stacks follow on stderr)",
              entry.process.name, pid, stalled)
    for handler in logging.getLogger().handlers:
        handler.flush()  # that line before the child's stacks, not cutting them
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        time.sleep(DUMP_S)  # a stopped (SIGSTOP) process dumps nothing: SIGKILL still ends it
        os.kill(pid, signal.SIGKILL)


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


def die_with_parent() -> None:
    """In a child, first thing: have the kernel send it SIGTERM when its parent dies, however
    the parent died and whatever the child's loop is doing then."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the call
        raise SystemExit("inferno facade: the parent process is gone")
