"""Sleeps for the batch's largest ``delay_ms``, then echoes ``x`` as ``y``."""

from __future__ import annotations

import time
from typing import Any

import torch


def create(context: Any) -> Any:
    def predict(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        delay = inputs["delay_ms"]
        if delay.numel():
            time.sleep(max(float(delay.max()), 0.0) / 1000)
        return {"y": inputs["x"]}

    return predict
