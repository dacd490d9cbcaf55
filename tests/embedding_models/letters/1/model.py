"""Counts the letters a-z of each text; a text ``sleep:<ms>`` holds its batch that long."""

from __future__ import annotations

import string
import time
from typing import Any

import torch

SLEEP = "sleep:"


def counts(text: str) -> list[float]:
    folded = text.lower()
    return [float(folded.count(letter)) for letter in string.ascii_lowercase]


def create(context: Any) -> Any:
    def predict(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts: list[str] = inputs["text"]
        for text in texts:
            if text.startswith(SLEEP):
                time.sleep(int(text[len(SLEEP):]) / 1000)
        return {"counts": torch.tensor([counts(t) for t in texts], dtype=torch.float32)}

    return predict
