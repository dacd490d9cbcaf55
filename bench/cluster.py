"""Start and stop a distributed cluster for a benchmark run: N workers and M facades.

Each run gets a fresh RabbitMQ vhost (unless ``--broker-url`` names one) and a unique Redis key
prefix; ``inferno worker`` processes, each preloading only the benchmarked model and exposing
its Prometheus metrics on a free port, and ``inferno facade`` processes on free HTTP and gRPC
ports (each ``--workers`` ``facade_processes``, a stalled one replaced after 2 s; gRPC off when
``ClusterSpec.grpc`` is false; their HTTP served by uvicorn, or by granian when ``ClusterSpec.http``
says so: ``bench.granian_app``), all with access logs off, log level WARNING and a 0.5 s
heartbeat. The cluster is ready when every facade answers ``/health/ready`` and its
``GET /v1/models`` shows the model's active version served by all N workers.

On exit, whatever happened, the processes stop first (SIGTERM, SIGKILL after a grace period), so
no worker heartbeats again, then the Redis keys of the prefix go, then the vhost.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.server import GRANIAN, QUIET_ENV, UVICORN, Started, http_command, listen_env
from harness.process import free_port, get_status, shielded, spawn, stop_all
from harness.services import DEFAULT_BROKER, DEFAULT_REDIS, delete_keys, fresh_vhost, unique_name

__all__ = ["Cluster", "ClusterSpec"]

HEARTBEAT_INTERVAL_S = "0.5"
FACADE_STALL_TIMEOUT_S = "2"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    model: str
    workers: int = 1
    facades: int = 1
    repo: str | None = None
    host: str = "127.0.0.1"
    broker_url: str | None = None
    """An existing broker and vhost; ``None`` creates a vhost on the local broker."""
    redis_url: str = DEFAULT_REDIS
    ready_timeout_s: float = 180.0
    facade_processes: int = 1
    """Processes of each facade (``inferno facade --workers``)."""
    grpc: bool = True
    """``False``: the facades serve no gRPC (``INFERNO_GRPC_PORT=0``)."""
    http: str = UVICORN
    """What serves the facades' HTTP (``bench.server.HTTP_SERVERS``); the workers are the same
    under either."""

    def __post_init__(self) -> None:
        if self.http == GRANIAN and self.facade_processes > 1:
            raise ValueError("a facade under granian is one process: facade_processes 1")


@dataclass(frozen=True, slots=True)
class _Role:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    """Base URL: the facade's HTTP server, or the worker's metrics server."""
    grpc_address: str = ""
    """A facade's gRPC ``host:port``; empty for a worker."""


class Cluster(Started):
    """The running cluster; a context manager that always tears it down."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.broker_url = ""
        self.redis_prefix = unique_name()
        self._facades: list[_Role] = []
        self._workers: list[_Role] = []
        self._stack = contextlib.ExitStack()

    @property
    def facade_urls(self) -> list[str]:
        return [f.url for f in self._facades]

    @property
    def grpc_addresses(self) -> list[str]:
        """Every facade's gRPC ``host:port``, as ``facade_urls`` lists them (none with gRPC
        off)."""
        return [f.grpc_address for f in self._facades if f.grpc_address]

    @property
    def facade_processes(self) -> list[subprocess.Popen[bytes]]:
        """Every facade, as ``facade_urls`` lists them (with ``--workers``, the parent)."""
        return [f.process for f in self._facades]

    @property
    def metrics_urls(self) -> list[str]:
        """Every ``/metrics``: the facades' (request families) and the workers' (batches)."""
        return [f"{role.url}/metrics" for role in (*self._facades, *self._workers)]

    def _env(self) -> dict[str, str]:
        env = {**QUIET_ENV, "INFERNO_BROKER_URL": self.broker_url,
               "INFERNO_REDIS_URL": self.spec.redis_url,
               "INFERNO_REDIS_PREFIX": self.redis_prefix,
               "INFERNO_HEARTBEAT_INTERVAL_S": HEARTBEAT_INTERVAL_S}
        if self.spec.repo is not None:
            env["INFERNO_REPO_ROOT"] = self.spec.repo
        return env

    def _spawn(self, role: str, command: list[str], url: str, env: dict[str, str],
               grpc_address: str = "") -> _Role:
        roles = self._workers if role == "worker" else self._facades
        started = _Role(f"{role} {len(roles) + 1}", spawn(command, {**self._env(), **env}), url,
                        grpc_address)
        roles.append(started)
        return started

    def add_worker(self) -> subprocess.Popen[bytes]:
        """One more worker, like those of the spec (not awaited: it joins when it is ready)."""
        port = free_port()
        command = [sys.executable, "-m", "inferno", "worker"]
        return self._spawn("worker", command, f"http://127.0.0.1:{port}", {
            "INFERNO_METRICS_PORT": str(port), "INFERNO_PRELOAD": self.spec.model}).process

    @property
    def worker_processes(self) -> list[subprocess.Popen[bytes]]:
        """Every worker started, the running ones and those that exited (killed)."""
        return [role.process for role in self._workers]

    def start(self) -> None:
        spec = self.spec
        if spec.broker_url is None:
            self.broker_url = self._stack.enter_context(fresh_vhost(DEFAULT_BROKER))
        else:
            self.broker_url = spec.broker_url
        self._stack.callback(self._delete_keys)
        self._stack.callback(self._stop_processes)
        for _ in range(spec.workers):
            self.add_worker()
        for _ in range(spec.facades):
            port = free_port(spec.host)
            grpc_port = free_port(spec.host) if spec.grpc else 0
            url = f"http://{spec.host}:{port}"
            self._spawn("facade", http_command("facade", spec.http), url, {
                **listen_env(spec.host, port), "INFERNO_GRPC_PORT": str(grpc_port),
                "INFERNO_FACADE_PROCESSES": str(spec.facade_processes),
                "INFERNO_FACADE_STALL_TIMEOUT_S": FACADE_STALL_TIMEOUT_S},
                f"{spec.host}:{grpc_port}" if grpc_port else "")
        self._wait_ready()

    def _delete_keys(self) -> None:
        # A failed clean-up is reported, not raised: it must not hide why the run ended.
        try:
            delete_keys(self.spec.redis_url, self.redis_prefix)
        except Exception as exc:
            print(f"bench: could not delete the Redis keys {self.redis_prefix}:* "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)

    def _stop_processes(self) -> None:
        stop_all(role.process for role in (*self._facades, *self._workers))

    def _pending(self) -> str | None:
        """What the cluster still waits for, or ``None`` when it is ready."""
        for role in (*self._workers, *self._facades):
            if role.process.poll() is not None:
                raise RuntimeError(f"{role.name} exited with code {role.process.returncode} "
                                   f"during start-up")
        for facade in self._facades:
            ready = get_status(f"{facade.url}/health/ready")
            if ready is None or ready[0] != 200:
                return f"{facade.url}/health/ready"
            serving = _serving_workers(facade.url, self.spec.model)
            if serving < self.spec.workers:
                return (f"{facade.url}: model '{self.spec.model}' served by {serving} of "
                        f"{self.spec.workers} worker(s)")
        return None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        while (pending := self._pending()) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready in {self.spec.ready_timeout_s:.0f} s: "
                                   f"waiting for {pending}")
            time.sleep(0.2)

    def stop(self) -> None:
        with shielded():
            self._stack.close()


def _serving_workers(base_url: str, model: str) -> int:
    """Workers that the facade sees serving the model's active version (0 if none yet)."""
    answer = get_status(f"{base_url}/v1/models")
    if answer is None or answer[0] != 200:
        return 0
    for summary in json.loads(answer[1]).get("models", []):
        if summary.get("name") == model and summary.get("active") is not None:
            return len(summary.get("workers", {}).get(str(summary["active"]), []))
    return 0
