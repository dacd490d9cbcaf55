"""A stop that ends the process even when its event loop cannot.

A stop signal asks the event loop to drain and exit; a loop that is stuck (blocked on a lock,
spinning) never does, and the process lives on deaf to SIGTERM, holding its port. ``HardStop``
is a thread started with the process: once ``arm``-ed by the stop signal's handler, it exits the
process ``drain_s + GRACE_S`` later unless the process has exited by then.

Every server role arms one from its stop signal (``inferno.cli``): the facade (alone, embedded
or one of ``--workers``) and the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time

__all__ = ["EXIT_STUCK", "GRACE_S", "HardStop"]

log = logging.getLogger("inferno")

GRACE_S = 5.0
"""Beyond the drain timeout: closing the broker and store connections after the drain."""
EXIT_STUCK = 70  # EX_SOFTWARE
_POLL_S = 0.25


class HardStop:
    def __init__(self, drain_s: float) -> None:
        self._after_s = drain_s + GRACE_S
        self._deadline: float | None = None

    def start(self) -> None:
        """Start the watching thread (before any signal: starting a thread takes locks)."""
        threading.Thread(target=self._watch, name="hard-stop", daemon=True).start()

    def arm(self) -> None:
        """Called from a signal handler, which may interrupt any code, a lock's holder
        included: one attribute written, no lock taken."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self._after_s

    def _watch(self) -> None:
        while (deadline := self._deadline) is None or time.monotonic() < deadline:
            time.sleep(_POLL_S)
        log.critical("not stopped %.0f s after the stop signal (its event loop is stuck): "
                     "exiting now", self._after_s)
        time.sleep(_POLL_S)  # the log writer's turn
        os._exit(EXIT_STUCK)
