"""The ``inferno`` launcher: wires facade and worker together for each mode.

``Embedded`` is imported on first use: it brings the worker, and with it torch, which a facade
process (``inferno facade``, each child of ``--workers``) never needs (seconds of start-up and
hundreds of MB each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferno.embedded import Embedded

__all__ = ["Embedded"]


def __getattr__(name: str) -> Any:
    if name == "Embedded":
        from inferno.embedded import Embedded

        return Embedded
    raise AttributeError(f"module 'inferno' has no attribute {name!r}")
