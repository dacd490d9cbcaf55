"""Fixtures of the contract suites: one ``broker`` and one ``store`` per implementation.

Each suite runs once per implementation: ``memory`` (embedded mode) and the real one, ``amqp``
(RabbitMQ) for the broker and ``redis`` for the state store. The real ones need the services of
tests/services.py: without them their cases skip (or fail, with ``INFERNO_REQUIRE_SERVICES=1``).

Isolation: every test uses a fresh model name (``model`` fixture), so tests can share a server.
Redis gets a fresh key prefix per test (cheap). RabbitMQ gets one vhost per test module, not per
test: creating one costs ~1.5 s of ``rabbitmqctl``, which per test would add about a minute to a
suite that runs in ~12 s; the vhost is deleted with everything in it when the module ends. Tests
that look into the shared ``inferno.dead-letter`` queue pick out their own messages by id.

``peer`` / ``peer_store`` is what another process sees: a second connection to the same server for
the real implementations; the very same object in memory, where every component of the one
process shares it.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

import pytest

from common.state.memory import InMemoryStateStore
from common.state.redis_store import RedisStateStore
from common.state.store import StateStore
from common.transport.amqp.broker import AmqpBroker
from common.transport.broker import Broker
from common.transport.memory import InMemoryBroker
from harness.services import fresh_vhost
from tests.contract.amqp_peers import amqp, producer  # noqa: F401 (fixtures)
from tests.services import RedisSpace

BrokerFactory = Callable[[], Awaitable[Broker]]
StoreFactory = Callable[[], Awaitable[StateStore]]


# --- RabbitMQ: one vhost per module ------------------------------------------------------------


@pytest.fixture(scope="module")
def amqp_url(broker_root_url: str) -> Iterator[str]:
    """A vhost of this test module's own, deleted afterwards with everything declared in it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to create a vhost for the contract tests")
    with fresh_vhost(broker_root_url, kind="contract") as url:
        yield url


# --- brokers -----------------------------------------------------------------------------------


class _Service(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=_Service)


@contextlib.asynccontextmanager
async def _instances(make: Callable[[], S], shared: bool
                     ) -> AsyncIterator[Callable[[], Awaitable[S]]]:
    """A factory of started instances, closed on exit (last started first). ``shared``: one
    instance for every call, as one process's components share the in-memory implementation."""
    started: list[S] = []

    async def new() -> S:
        if shared and started:
            return started[0]
        instance = make()
        await instance.start()
        started.append(instance)
        return instance

    try:
        yield new
    finally:
        for instance in reversed(started):
            await instance.aclose()


@pytest.fixture(params=["memory", "amqp"])
async def brokers(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Started brokers of one implementation, closed after the test (last started first)."""
    make: Callable[[], Broker]
    if request.param == "memory":
        make = InMemoryBroker
    else:
        make = functools.partial(AmqpBroker, request.getfixturevalue("amqp_url"))
    async with _instances(make, shared=request.param == "memory") as new:
        yield new


@pytest.fixture
async def broker(brokers: BrokerFactory) -> Broker:
    return await brokers()


@pytest.fixture
async def peer(broker: Broker, brokers: BrokerFactory) -> Broker:
    """The broker as another process sees it (a worker's, when ``broker`` is a facade's)."""
    return await brokers()


# --- state stores ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Started stores of one implementation sharing one state, closed after the test."""
    make: Callable[[], StateStore]
    if request.param == "memory":
        make = InMemoryStateStore
    else:
        space: RedisSpace = request.getfixturevalue("redis_space")
        make = functools.partial(RedisStateStore, space.url, space.prefix)
    async with _instances(make, shared=request.param == "memory") as new:
        yield new


@pytest.fixture
async def store(stores: StoreFactory) -> StateStore:
    return await stores()


@pytest.fixture
async def peer_store(store: StateStore, stores: StoreFactory) -> StateStore:
    """The state as another replica (another facade, a worker) sees it."""
    return await stores()


@pytest.fixture
def model() -> str:
    """A model name no other test uses."""
    return f"contract-{uuid.uuid4().hex[:10]}"
