"""What the benchmark (``bench``) and the tests share, so that the tests never import ``bench``.

- ``harness.services``: a RabbitMQ vhost of one's own (``rabbitmqctl``) and a Redis key prefix,
  and their clean-up;
- ``harness.process``: child processes (detached start, readiness polling, SIGTERM then SIGKILL)
  and a free port;
- ``harness.proxy``: a TCP proxy that can be cut or stalled, in the caller's event loop or in a
  thread of its own;
- ``harness.built``: the models the bench builds in a temporary repository (``tiny``, ``fixed``);
- ``harness.faults``: the chaos soak's fault kinds and a facade's serving children.
"""

from harness.built import BUILT, FIXED, FIXED_BATCH_S, TINY, built_repo
from harness.faults import ALL_FAULTS, GLOBAL_FAULTS, facade_children
from harness.process import free_port, get_status, shielded, spawn, stop_all, wait_ready
from harness.proxy import CuttableProxy, ThreadedProxy
from harness.services import (
    DEFAULT_BROKER,
    DEFAULT_REDIS,
    delete_keys,
    fresh_vhost,
    rabbitmqctl,
    unique_name,
)

__all__ = [
    "ALL_FAULTS",
    "BUILT",
    "DEFAULT_BROKER",
    "DEFAULT_REDIS",
    "FIXED",
    "FIXED_BATCH_S",
    "GLOBAL_FAULTS",
    "TINY",
    "CuttableProxy",
    "ThreadedProxy",
    "built_repo",
    "delete_keys",
    "facade_children",
    "free_port",
    "fresh_vhost",
    "get_status",
    "rabbitmqctl",
    "shielded",
    "spawn",
    "stop_all",
    "unique_name",
    "wait_ready",
]
