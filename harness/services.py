"""The RabbitMQ vhost and the Redis key prefix a distributed run owns, and their clean-up.

By default each run creates a vhost of its own on the local broker with ``rabbitmqctl`` and
deletes it afterwards, with every queue declared in it; with ``--broker-url`` the run uses that
broker and vhost as they are and deletes nothing there. Redis is shared (``--redis-url``), so
isolation is a unique key prefix whose keys are deleted at the end. The tests isolate themselves
with these same helpers (``tests/services.py``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_BROKER", "DEFAULT_REDIS", "delete_keys", "fresh_vhost", "rabbitmqctl",
           "unique_name"]

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
_RABBITMQCTL_TIMEOUT_S = 60.0


def unique_name(kind: str = "bench") -> str:
    """``inferno-<kind>-<10 hex digits>``: a vhost or key prefix no other run uses."""
    return f"inferno-{kind}-{uuid.uuid4().hex[:10]}"


def rabbitmqctl(*args: str) -> str:
    """Run the broker's own admin tool; what it printed, or ``RuntimeError`` with its stderr."""
    try:
        return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                              text=True, timeout=_RABBITMQCTL_TIMEOUT_S).stdout
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip()
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {detail}") from None


@contextlib.contextmanager
def fresh_vhost(root_url: str = DEFAULT_BROKER, kind: str = "bench") -> Iterator[str]:
    """A new vhost on the broker of ``root_url`` (its user gets every permission), deleted on exit.

    Yields the AMQP URL of the vhost.
    """
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is not on PATH: it creates the run's vhost; "
                           "pass --broker-url to use an existing broker and vhost instead")
    vhost = unique_name(kind)
    parts = urlsplit(root_url)
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
        yield urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", "", ""))
    finally:
        try:
            rabbitmqctl("delete_vhost", vhost)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            # Reported, not raised: a failed clean-up must not hide why the run ended.
            print(f"could not delete vhost {vhost}: {exc}", file=sys.stderr)


def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete every key ``<prefix>:*``; the number deleted."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10.0)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()
