"""Fixtures of the contract suites: one ``broker`` and one ``store`` per implementation.

Each suite runs once per entry of ``BROKERS`` / ``STORES``. To add the AMQP broker (or the Redis
store), add a factory that connects to a test server and ``pytest.skip``s when none is
configured, and add its name to the fixture's ``params``. The tests use a fresh model name per
test (``model`` fixture), so a real broker or Redis shared between tests needs no cleanup between
them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from common.broker import Broker
from common.memory_broker import InMemoryBroker
from common.memory_state import InMemoryStateStore
from common.state import StateStore

BROKERS: dict[str, Callable[[], Broker]] = {
    "memory": InMemoryBroker,
    # "amqp": lambda: AmqpBroker(os.environ["INFERNO_TEST_AMQP_URL"])  (skip when unset)
}
STORES: dict[str, Callable[[], StateStore]] = {
    "memory": InMemoryStateStore,
    # "redis": lambda: RedisStateStore(os.environ["INFERNO_TEST_REDIS_URL"], prefix=unique)
}


@pytest.fixture(params=["memory"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    implementation = BROKERS[request.param]()
    await implementation.start()
    yield implementation
    await implementation.aclose()


@pytest.fixture(params=["memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    implementation = STORES[request.param]()
    await implementation.start()
    yield implementation
    await implementation.aclose()


@pytest.fixture
def model() -> str:
    """A model name no other test uses."""
    return f"contract-{uuid.uuid4().hex[:10]}"
