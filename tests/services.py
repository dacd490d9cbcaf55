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
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


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


@pytest.fixture(scope="session")
def broker_root_url() -> str:
    url = os.environ.get("INFERNO_TEST_BROKER_URL", DEFAULT_BROKER)
    if not _reachable(url, 5672):
        url = _container_url("rabbitmq") or ""
        if not url:
            _missing("RabbitMQ")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("INFERNO_TEST_REDIS_URL", DEFAULT_REDIS)
    if not _reachable(url, 6379):
        url = _container_url("redis") or ""
        if not url:
            _missing("Redis")
    return url


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl (the broker's own admin tool) and return what it printed."""
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.fixture
def broker_url(broker_root_url: str) -> Iterator[str]:
    """A fresh vhost for this test, deleted afterwards with everything declared in it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to create a vhost per test")
    vhost = f"inferno-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    user = urlsplit(broker_root_url).username or "guest"
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    parts = urlsplit(broker_root_url)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", "", ""))
    rabbitmqctl("delete_vhost", vhost)


@dataclass(frozen=True)
class RedisSpace:
    url: str
    prefix: str


@pytest.fixture
def redis_space(redis_url: str) -> Iterator[RedisSpace]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"inferno-test-{uuid.uuid4().hex[:10]}"
    yield RedisSpace(redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
