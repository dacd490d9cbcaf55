"""Child processes of a benchmark run: start them detached, wait for HTTP readiness, stop them;
and a free port for a server (the tests' too).

Every server process runs in its own session, so a Ctrl-C at the terminal reaches only the bench
process, which then stops its children itself: SIGTERM to all of them at once (graceful
shutdown), SIGKILL to those still running after a shared grace period. On Linux a child also gets
SIGTERM if the bench process dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = ["free_port", "get_status", "shielded", "spawn", "stop_all", "wait_ready"]

_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 20.0
"""How long children may take to shut down gracefully before they are killed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, its output on this process's stderr."""
    return subprocess.Popen(
        list(command), env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=sys.stderr,
        stderr=sys.stderr, start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def stop_all(processes: Iterable[subprocess.Popen[bytes]],
             grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every running process, wait up to ``grace_s`` for all, SIGKILL the rest."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while cleaning up, so a second one cannot leave children behind.

    Only the main thread may change signal handlers; elsewhere this does nothing.
    """
    try:
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def get_status(url: str, timeout_s: float = 2.0) -> tuple[int, bytes] | None:
    """Status and body of ``GET url``, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return None


def wait_ready(base_url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
               ) -> None:
    """Poll ``GET /health/ready`` until it answers 200 (or the server exits, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} during start-up")
        answer = get_status(f"{base_url}/health/ready")
        if answer is not None and answer[0] == 200:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health/ready did not answer 200 in {timeout_s:.0f} s")
        time.sleep(0.1)
