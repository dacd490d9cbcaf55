"""The ``inferno`` launcher: wires facade and worker together for each mode."""

from inferno.embedded import Embedded

__all__ = ["Embedded"]
