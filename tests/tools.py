"""The real external tools some tests run (promtool, kubectl, node, chromium, chromedriver).

`make tools` installs them (`.ci/run` does); a developer without them sees those tests skip with
the command to run, and CI (``INFERNO_REQUIRE_SERVICES=1``) fails them instead, so a checker that
went missing never passes silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["NODE_MODULES", "require_node_module", "require_tool"]

TOOLS = Path(__file__).resolve().parent / "tools"
NODE_MODULES = TOOLS / "node_modules"
"""The npm packages `make tools` installs (tests/tools/package.json)."""


def require_tool(name: str) -> str:
    """The path of the executable ``name`` (tests/tools/bin first, then PATH)."""
    local = TOOLS / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} is not installed: run `make tools`"
    if os.environ.get("INFERNO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"INFERNO_REQUIRE_SERVICES=1: {reason}")
    pytest.skip(reason)


def require_node_module(package: str) -> Path:
    """The folder of an npm package `make tools` installed."""
    folder = NODE_MODULES / package
    if not folder.is_dir():
        require_tool(f"node_modules/{package}")  # not on PATH: skips or fails with the reason
    return folder
