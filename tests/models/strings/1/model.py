"""Upper-cases each row of a string batch and counts its characters."""

from __future__ import annotations

from typing import Any

import torch


def create(context: Any) -> Any:
    def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        text = inputs["text"]
        if not isinstance(text, list) or not all(isinstance(s, str) for s in text):
            raise TypeError(f"expected a list of str, got {type(text).__name__}")
        return {"upper": [s.upper() for s in text],
                "length": torch.tensor([len(s) for s in text], dtype=torch.int64)}

    return predict
