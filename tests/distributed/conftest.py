"""A cluster in one test: facades and workers over a real RabbitMQ vhost and Redis prefix.

Facades and workers run in this process (real AmqpBroker and RedisStateStore, each its own
connection) or, where a test needs to kill one, as ``inferno worker`` subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from prometheus_client import CollectorRegistry

from common.backends import create_broker
from common.metrics import WorkerMetrics
from common.model.repository import ModelRepository
from common.settings import CommonSettings, FacadeSettings, WorkerSettings
from common.state.redis_store import RedisStateStore
from common.transport.broker import Broker
from common.wire.messages import request_headers
from facade.app import Facade
from harness.proxy import CuttableProxy
from tests.integration.conftest import make_repo
from tests.services import RedisSpace
from worker.reconciler import Reconciler

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    broker_url: str
    redis: RedisSpace
    repo: Path
    closers: list[Any] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "INFERNO_BROKER_URL": self.broker_url,
                "INFERNO_REDIS_URL": self.redis.url, "INFERNO_REDIS_PREFIX": self.redis.prefix,
                "INFERNO_REPO_ROOT": str(self.repo), "INFERNO_HEARTBEAT_INTERVAL_S": "0.5",
                "INFERNO_METRICS_PORT": "0", "INFERNO_DEVICE": "cpu",
                "INFERNO_GRPC_PORT": "0", **extra}

    async def _connect(self, settings: CommonSettings
                       ) -> tuple[ModelRepository, Broker, RedisStateStore]:
        """What each facade or worker process has of its own: repository, broker, store."""
        repository = ModelRepository(settings.repo_root)
        repository.scan()
        broker = create_broker(settings)
        store = RedisStateStore(self.redis.url, self.redis.prefix)
        await broker.start()
        await store.start()
        return repository, broker, store

    async def facade(self, **settings: Any) -> tuple[Facade, httpx.AsyncClient]:
        fs = FacadeSettings(**{"repo_root": self.repo, "broker_url": self.broker_url,
                               "redis_url": self.redis.url, "redis_prefix": self.redis.prefix,
                               "access_log": False, "heartbeat_interval_s": 0.5,
                               "admin_timeout_s": 30, **settings})
        repository, broker, store = await self._connect(fs)
        facade = await Facade.create(fs, broker, store, repository, CollectorRegistry())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=facade.app),
                                   base_url="http://inferno", timeout=60)
        # Closed in reverse: the facade before the connections it uses.
        self.closers += [broker.aclose, store.aclose, facade.aclose, client.aclose]
        return facade, client

    def _worker_settings(self, **settings: Any) -> WorkerSettings:
        return WorkerSettings(**{"repo_root": self.repo, "broker_url": self.broker_url,
                                 "redis_url": self.redis.url, "redis_prefix": self.redis.prefix,
                                 "heartbeat_interval_s": 0.5, "device": "cpu",
                                 "drain_timeout_s": 10, "preload": ["mlp"], **settings})

    async def worker(self, **settings: Any) -> tuple[Reconciler, CollectorRegistry]:
        ws = self._worker_settings(**settings)
        repository, broker, store = await self._connect(ws)
        registry = CollectorRegistry()
        worker = Reconciler(ws, broker, store, repository, WorkerMetrics(registry))
        await worker.start()
        self.closers += [broker.aclose, store.aclose, worker.stop]
        return worker, registry

    async def burst(self, **settings: Any) -> dict[str, str]:
        """A worker in burst mode, in this process: it drains what is queued for its models,
        stops and closes its connections; the versions it could not load come back."""
        ws = self._worker_settings(**settings)
        repository, broker, store = await self._connect(ws)
        try:
            return await Reconciler(ws, broker, store, repository,
                                    WorkerMetrics(CollectorRegistry())).burst()
        finally:
            await store.aclose()
            await broker.aclose()

    async def broker_proxy(self) -> tuple[CuttableProxy, str]:
        """A TCP proxy to the broker (stopped with the cluster) and the broker URL through it."""
        target = urlsplit(self.broker_url)
        proxy = CuttableProxy(target.hostname or "127.0.0.1", target.port or 5672)
        await proxy.start()
        self.closers.append(proxy.aclose)
        return proxy, urlunsplit((target.scheme, f"{target.username}:{target.password}"
                                                 f"@127.0.0.1:{proxy.port}", target.path, "", ""))

    def worker_process(self, **env: str) -> subprocess.Popen[bytes]:
        return self._process("worker", env)

    def facade_process(self, **env: str) -> subprocess.Popen[bytes]:
        return self._process("facade", env)

    def _process(self, role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "inferno", role], cwd=ROOT,
                                   env=self.env(**env), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        self.processes.append(process)
        return process


@pytest.fixture
def cluster(broker_url: str, redis_space: RedisSpace, tmp_path: Path) -> Iterator[Cluster]:
    yield Cluster(broker_url, redis_space, make_repo(tmp_path))


@pytest.fixture
async def running(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster, closed in reverse order of start-up after the test."""
    yield cluster
    for process in cluster.processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for close in reversed(cluster.closers):
        try:
            await asyncio.wait_for(close(), 30)
        except TimeoutError:
            raise AssertionError(f"{close} did not finish in 30 s") from None
        except Exception:  # a test may have closed it already
            pass


async def wait_ready(facade: Facade, timeout: float = 60) -> None:
    view = facade.view
    assert await view.wait_for(lambda: True if view.ready()[0] and view.models else None,
                               timeout), f"cluster not ready: {view.ready()}"


async def queue_requests(connection: AbstractConnection, routing_key: str,
                         bodies: list[tuple[bytes, str]], timeout_s: float = 120
                         ) -> AbstractQueue:
    """Publish each (body, content type) to ``routing_key`` as a producer does, correlation id
    its index, replies to a new exclusive queue, which comes back. Each publish is confirmed:
    all are queued when this returns."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.get_exchange("inferno.predict")
    replies = await channel.declare_queue(exclusive=True)
    deadline = time.time() + timeout_s
    for index, (body, content_type) in enumerate(bodies):
        await exchange.publish(aio_pika.Message(
            body, content_type=content_type, correlation_id=str(index), reply_to=replies.name,
            expiration=timeout_s, headers=request_headers(deadline)),
            routing_key=routing_key, mandatory=True)
    return replies


async def replies_in(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    """The messages in the queue now, taken without waiting for more."""
    found = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(message)
    return found
