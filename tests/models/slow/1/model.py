"""Sleeps for the batch's largest ``delay_ms``, then echoes ``x`` as ``y``.

A negative ``delay_ms`` holds the batch until the test opens the gate instead: the file named by
``INFERNO_TEST_SLOW_GATE`` exists (``tests.gate``). A test that needs the slot held while it
floods the queue then depends on its own event, not on the flood finishing within a delay.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

GATE_WAIT_S = 60.0


def _wait_for_gate() -> None:
    gate = Path(os.environ["INFERNO_TEST_SLOW_GATE"])
    until = time.monotonic() + GATE_WAIT_S
    while not gate.exists() and time.monotonic() < until:
        time.sleep(0.002)  # the model's thread: nothing else runs on it meanwhile


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        delay = inputs["delay_ms"]
        if delay.numel() and float(delay.min()) < 0:
            _wait_for_gate()
        elif delay.numel():
            time.sleep(max(float(delay.max()), 0.0) / 1000)
        return {"y": inputs["x"]}

    return predict
