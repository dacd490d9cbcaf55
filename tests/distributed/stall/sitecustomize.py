"""A test seam: every Python process started with this folder on ``PYTHONPATH`` imports this at
start-up. SIGUSR2 then blocks its main thread for good on a lock it already holds, as a
deadlock does, so that its event loop never runs again; it says so on stderr first."""

import os
import signal
import threading

BLOCKED = "main thread blocked (tests/distributed/stall)"


def _block(_sig: int, _frame: object) -> None:
    os.write(2, f"{BLOCKED}\n".encode())
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


signal.signal(signal.SIGUSR2, _block)
