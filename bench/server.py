"""Start and stop the embedded server (``inferno serve``) for a benchmark run.

The server runs in its own session, so a Ctrl-C at the terminal reaches only the bench process,
which then stops the server itself (SIGTERM: uvicorn's graceful shutdown; SIGKILL after 20 s).
On Linux the server also gets SIGTERM if the bench process dies without cleaning up.
Access logs are off and the log level is WARNING: logging every request would cost the server
CPU that the benchmark is trying to measure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import TracebackType

__all__ = ["EmbeddedServer", "free_port", "wait_ready"]

_PR_SET_PDEATHSIG = 1


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


def wait_ready(base_url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
               ) -> None:
    """Poll ``GET /health/ready`` until it answers 200 (or the server exits, or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"{base_url}/health/ready", timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health/ready did not answer 200 in {timeout_s:.0f} s")
        time.sleep(0.1)


class EmbeddedServer:
    """``inferno serve`` as a subprocess; a context manager that always stops it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, repo: str | None = None,
                 ready_timeout_s: float = 120.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.repo = repo
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "inferno", "serve",
                   "--host", self.host, "--port", str(self.port)]
        if self.repo is not None:
            command += ["--repo", self.repo]
        env = {**os.environ, "INFERNO_ACCESS_LOG": "false", "INFERNO_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        wait_ready(self.base_url, self.ready_timeout_s, self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # uvicorn shuts down gracefully on SIGTERM; before it runs, SIGTERM ends start-up quietly.
        process.terminate()
        try:
            process.wait(20.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
