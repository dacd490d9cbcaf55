"""Real RabbitMQ and Redis for integration tests, each test isolated in its own vhost / prefix.

Where the services come from, in order: ``INFERNO_TEST_BROKER_URL`` / ``INFERNO_TEST_REDIS_URL``;
the local defaults (127.0.0.1:5672 guest/guest, 127.0.0.1:6379) when they answer; containers
started with testcontainers where Docker runs. Otherwise the tests skip with the reason, and with
``INFERNO_REQUIRE_SERVICES=1`` (CI) they fail instead: a missing service never passes silently.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from harness.services import DEFAULT_BROKER, DEFAULT_REDIS, delete_keys, fresh_vhost, unique_name


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _missing(what: str) -> None:
    reason = f"{what} is not reachable and Docker is not available to start one"
    if os.environ.get("INFERNO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"INFERNO_REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason)


def _container_url(kind: str) -> str | None:
    """Start a throwaway container when testcontainers and Docker are there (a laptop)."""
    try:
        if kind == "rabbitmq":
            from testcontainers.rabbitmq import RabbitMqContainer

            container = RabbitMqContainer("rabbitmq:3.13-management").start()
            host = container.get_container_host_ip()
            return f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"
        from testcontainers.redis import RedisContainer

        redis_container = RedisContainer("redis:7").start()
        host = redis_container.get_container_host_ip()
        return f"redis://{host}:{redis_container.get_exposed_port(6379)}/0"
    except Exception:
        return None


def _service(variable: str, default: str, port: int, kind: str, what: str) -> str:
    """The service's URL: the variable, else the local default, else a container."""
    url = os.environ.get(variable, default)
    if not _reachable(url, port):
        url = _container_url(kind) or ""
        if not url:
            _missing(what)
    return url


@pytest.fixture(scope="session")
def broker_root_url() -> str:
    return _service("INFERNO_TEST_BROKER_URL", DEFAULT_BROKER, 5672, "rabbitmq", "RabbitMQ")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service("INFERNO_TEST_REDIS_URL", DEFAULT_REDIS, 6379, "redis", "Redis")


@pytest.fixture
def broker_url(broker_root_url: str) -> Iterator[str]:
    """A fresh vhost for this test, deleted afterwards with everything declared in it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to create a vhost per test")
    with fresh_vhost(broker_root_url, kind="test") as url:
        yield url


@dataclass(frozen=True)
class RedisSpace:
    url: str
    prefix: str


@pytest.fixture
def redis_space(redis_url: str) -> Iterator[RedisSpace]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = unique_name("test")
    yield RedisSpace(redis_url, prefix)
    delete_keys(redis_url, prefix)
