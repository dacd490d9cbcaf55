"""What the chaos soak and the tests both know of its faults: their kinds, and the processes one
of them strikes (a facade's serving children).

The faults themselves, and what each one does, are the soak's (``bench/chaos_faults.py``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["ALL_FAULTS", "GLOBAL_FAULTS", "facade_children"]

ALL_FAULTS = ("worker_kill", "close_connections", "stop_app", "redis_kill", "redis_pause",
              "proxy_cut", "proxy_stall", "facade_stall")
GLOBAL_FAULTS = ("stop_app", "redis_pause")
"""Faults that reach every user of the shared broker or Redis, not only this run."""


def facade_children(parent: psutil.Process) -> list[psutil.Process]:
    """The serving children of an ``inferno facade --workers`` (multiprocessing's resource
    tracker is a child too); one killed and not yet reaped (a zombie) is not among them."""
    import psutil  # only those who hold a psutil.Process need it

    found = []
    for child in parent.children():
        with contextlib.suppress(psutil.NoSuchProcess):  # a zombie raises a subclass of it
            if any("spawn_main" in part for part in child.cmdline()):
                found.append(child)
    return found
