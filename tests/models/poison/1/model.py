"""Doubles ``x``; a batch holding the marker value kills the process (os._exit), like a crash."""

from __future__ import annotations

import os
from typing import Any

import torch

MARKER = 666.0
EXIT_STATUS = 71


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = inputs["x"]
        if bool((x == MARKER).any()):
            os._exit(EXIT_STATUS)  # no reply, no ack, no finally: the worker is just gone
        return {"y": x * 2}

    return predict
