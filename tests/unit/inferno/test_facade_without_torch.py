"""A facade process never imports torch (seconds of start-up and hundreds of MB each, for
nothing): the launcher imports the worker side only for the roles that run it. Checked in a
fresh interpreter, since this one has torch already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_launcher_and_the_facade_import_no_torch() -> None:
    check = ("import sys, inferno.cli, inferno.facade_processes, facade.app; "
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
