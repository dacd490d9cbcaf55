"""SIGTERM ends a facade or a worker whose event loop is stuck (inferno/hard_stop.py): its
loop never drains, and the hard stop exits the process at the drain timeout + GRACE_S, with
EXIT_STUCK and a line saying why. The loop is stuck for real (``stalls``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inferno.hard_stop import EXIT_STUCK
from tests.distributed.conftest import ROOT, Cluster
from tests.distributed.stalls import BLOCKED, STALL_ENV, STOPPED_WITHIN_S, text_of, until_logged
from tests.http import free_port

pytestmark = pytest.mark.asyncio

SERVING = {"facade": "facade on http://", "worker": " serving "}
"""What each role logs once it serves."""


def start(cluster: Cluster, role: str, log: Path) -> subprocess.Popen[bytes]:
    """``inferno <role>`` with the seam, its log in a file; killed after the test if need be."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferno", role], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=stderr, env=cluster.env(INFERNO_PORT=str(free_port()), INFERNO_PRELOAD="",
                                           INFERNO_LOG_JSON="false", **STALL_ENV))
    cluster.processes.append(process)
    return process


@pytest.mark.parametrize("role", ["facade", "worker"])
async def test_sigterm_ends_a_process_whose_loop_is_stuck(running: Cluster, tmp_path: Path,
                                                          role: str) -> None:
    log = tmp_path / f"{role}.log"
    process = start(running, role, log)
    await until_logged(SERVING[role], log)
    process.send_signal(signal.SIGUSR2)
    await until_logged(BLOCKED, log)
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, STOPPED_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{role} not stopped {STOPPED_WITHIN_S} s after SIGTERM: "
                             f"{text_of(log)}") from None
    assert code == EXIT_STUCK, text_of(log)
    assert "exiting now" in text_of(log)
