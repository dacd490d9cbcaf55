"""The chaos soak's faults, each injected and undone by one call (run in a thread); their kinds
(``ALL_FAULTS``) are in ``harness.faults``, which the tests read too.

| kind | what | reaches |
|---|---|---|
| ``worker_kill`` | SIGKILL a worker, start a new one | the run's workers |
| ``close_connections`` | ``rabbitmqctl close_all_connections -p <vhost>`` | the run's vhost |
| ``stop_app`` | ``rabbitmqctl stop_app``, a pause, ``start_app`` | **the whole broker** |
| ``redis_kill`` | ``CLIENT KILL ID`` of every client named after the run | the run's clients |
| ``redis_pause`` | ``CLIENT PAUSE 2000 ALL`` | **the whole Redis** |
| ``proxy_cut`` | close every proxied broker connection, refuse new ones a while | the run |
| ``proxy_stall`` | stop forwarding a while, connections left open (a silent link) | the run |
| ``facade_stall`` | SIGSTOP a facade child (``--workers``) until its parent replaces it | the run |

Every process of the run connects to Redis with ``client_name=<the run's prefix>``, so
``redis_kill`` reaches only them. ``stop_app`` and ``redis_pause`` cannot be narrowed: they hit
everyone sharing the broker or Redis. ``Faults.restore`` undoes whatever a fault left undone
(``start_app``, ``CLIENT UNPAUSE``, the proxy, SIGCONT), and is called in ``finally``.

A stopped facade child holds the connections it had accepted; nothing can answer the requests on
them, and once its parent kills it their clients see the connection close. ``stopped_ports``
records those connections' client ports, so that the load counts them apart
(``chaos_load.STOPPED``) from a request lost while its connection was in good hands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
import redis

from bench.cluster import Cluster
from harness.faults import facade_children
from harness.proxy import ThreadedProxy
from harness.services import rabbitmqctl

__all__ = ["Faults", "services_healthy"]

PAUSE_MS = 2000
REPLACED_WITHIN_S = 30.0
"""How long a stopped facade child's parent may take to replace it (then the fault failed)."""


@dataclass
class Faults:
    cluster: Cluster
    proxy: ThreadedProxy
    vhost: str
    redis_url: str
    """Redis, as the chaos soak's own admin client reaches it (no client name)."""
    client_name: str
    """The name every client of the run's processes gives itself."""
    rng: random.Random
    killed: set[int] = dataclasses.field(default_factory=set)
    """Pids of the workers this soak killed."""
    stopped_ports: set[int] = dataclasses.field(default_factory=set)
    """Client ports of the connections that stopped facade children held."""
    _app_stopped: bool = False
    _paused: bool = False
    _stopped_child: int | None = None

    def inject(self, kind: str) -> str:
        """Inject one fault and undo it; a line saying what was done."""
        action: Callable[[], str] = getattr(self, f"_{kind}")
        return action()

    def _worker_kill(self) -> str:
        running = [p for p in self.cluster.worker_processes if p.poll() is None]
        if not running:
            return "no worker running to kill"
        victim = self.rng.choice(running)
        self.killed.add(victim.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        started = self.cluster.add_worker()
        return f"killed worker pid {victim.pid}, started pid {started.pid}"

    def restart_exited_workers(self) -> list[int]:
        """What a process supervisor (Kubernetes) does: start a new worker for each one that
        exited by itself (a worker refuses to start while the broker is out of reach).
        The pids of those that exited."""
        exited = [p for p in self.cluster.worker_processes
                  if p.poll() is not None and p.pid not in self.killed]
        for process in exited:
            self.killed.add(process.pid)  # replaced once
            self.cluster.add_worker()
        return [p.pid for p in exited]

    def _close_connections(self) -> str:
        rabbitmqctl("close_all_connections", "-p", self.vhost, "chaos soak")
        return f"closed every connection of vhost {self.vhost}"

    def _stop_app(self) -> str:
        self._app_stopped = True
        try:
            rabbitmqctl("stop_app")
            time.sleep(self.rng.uniform(1.0, 3.0))
        finally:
            rabbitmqctl("start_app")
            self._app_stopped = False
        return "broker application stopped and started"

    def _redis_kill(self) -> str:
        client = self._admin()
        try:
            ours = [c for c in client.client_list() if c.get("name") == self.client_name]
            for entry in ours:
                with contextlib.suppress(redis.RedisError):
                    client.client_kill_filter(_id=entry["id"])
        finally:
            client.close()
        return f"killed {len(ours)} Redis client(s) named {self.client_name}"

    def _redis_pause(self) -> str:
        client = self._admin()
        try:
            self._paused = True
            client.client_pause(PAUSE_MS, all=True)
            time.sleep(PAUSE_MS / 1000)
        finally:
            with contextlib.suppress(redis.RedisError):
                client.client_unpause()
                self._paused = False
            client.close()
        return f"Redis paused for {PAUSE_MS} ms"

    def _proxy_cut(self) -> str:
        hold = self.rng.uniform(0.5, 3.0)
        try:
            self.proxy.cut()
            time.sleep(hold)
        finally:
            self.proxy.restore()
        return f"broker link cut for {hold:.1f} s"

    def _proxy_stall(self) -> str:
        hold = self.rng.uniform(0.5, 3.0)
        try:
            self.proxy.stall()
            time.sleep(hold)
        finally:
            self.proxy.resume()
        return f"broker link silent for {hold:.1f} s"

    def _facade_stall(self) -> str:
        index = self.rng.randrange(len(self.cluster.facade_processes))
        parent = psutil.Process(self.cluster.facade_processes[index].pid)
        port = urlsplit(self.cluster.facade_urls[index]).port
        children = facade_children(parent)
        if not children:
            raise RuntimeError(f"facade pid {parent.pid} has no child to stop (--workers 1?)")
        victim = self.rng.choice(children)
        victim.suspend()  # SIGSTOP
        self._stopped_child = victim.pid
        # psutil 6 renamed connections() net_connections(); the KServe SDK (a test extra)
        # holds psutil below 6.
        connections = getattr(victim, "net_connections", None) or victim.connections
        held = {c.raddr.port for c in connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr}
        self.stopped_ports.update(held)
        started = time.monotonic()
        while victim.is_running() or len(facade_children(parent)) < len(children):
            if time.monotonic() - started > REPLACED_WITHIN_S:
                raise RuntimeError(f"facade child pid {victim.pid} (stopped) not replaced "
                                   f"in {REPLACED_WITHIN_S:.0f} s")
            time.sleep(0.05)
        self._stopped_child = None
        return (f"stopped facade child pid {victim.pid} ({len(held)} connection(s)); its "
                f"parent replaced it in {time.monotonic() - started:.1f} s")

    def _admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    def restore(self) -> list[str]:
        """Undo what a fault may have left (called in ``finally``); what had to be undone."""
        undone = []
        if self._app_stopped:
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                rabbitmqctl("start_app")
                self._app_stopped = False
                undone.append("broker application started")
        if self._paused:
            client = self._admin()
            with contextlib.suppress(redis.RedisError):
                client.client_unpause()
                self._paused = False
                undone.append("Redis unpaused")
            client.close()
        with contextlib.suppress(Exception):
            self.proxy.resume()
            self.proxy.restore()
        if self._stopped_child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._stopped_child, signal.SIGCONT)
                undone.append(f"facade child pid {self._stopped_child} continued")
            self._stopped_child = None
        return undone


def services_healthy(redis_url: str) -> list[str]:
    """What is wrong with the shared services after a run (empty: the broker application runs
    and Redis answers at once)."""
    problems = []
    try:
        rabbitmqctl("await_startup")
        rabbitmqctl("status")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        problems.append(f"broker: {exc}")
    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        started = time.monotonic()
        client.set("inferno-chaos-probe", "1", px=1000)  # a write: refused while paused
        if time.monotonic() - started > 0.5:
            problems.append("redis: slow to answer a write (paused?)")
    except redis.RedisError as exc:
        problems.append(f"redis: {exc}")
    finally:
        client.close()
    return problems
