"""Embeds token ids as ``[count, sum, position-weighted sum, largest]``: given as ``ids`` (rows
padded to ``max_tokens``) or read from ``text`` (each word an id); model.yaml says more."""

from __future__ import annotations

from typing import Any

import torch


def word_id(word: str) -> int:
    return int(word) if word.isascii() and word.isdigit() else sum(word.encode())


def embed(ids: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The vectors of rows of ids whose padding trails, and each row's count of real ids."""
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    lengths = ((ids != pad) * positions).amax(dim=1)  # each row's last real id, from 1
    # Cut the padding: compute as far as the longest real row, not max_tokens columns a row.
    width = max(1, int(lengths.max()))
    ids, positions = ids[:, :width], positions[:width]
    kept = torch.where(positions <= lengths[:, None], ids, 0)
    vector = torch.stack([lengths, kept.sum(dim=1), (kept * positions).sum(dim=1),
                          kept.amax(dim=1)], dim=1)
    return vector.to(torch.float32), lengths


def create(context: Any) -> Any:
    spec = context.config.embeddings
    pad, width = spec.pad_token_id, spec.max_tokens

    def predict(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "ids" in inputs:  # the warm-up gives both inputs; a request, one
            vector, lengths = embed(inputs["ids"], pad)
            return {"vector": vector, "tokens": lengths}
        words = [[word_id(w) for w in text.split()] for text in inputs["text"]]
        ids = torch.full((len(words), width), pad, dtype=torch.int64)
        for row, found in zip(ids, words, strict=True):
            kept = found[:width]
            row[:len(kept)] = torch.tensor(kept, dtype=torch.int64)
        vector, _ = embed(ids, pad)
        return {"vector": vector, "tokens": torch.tensor([len(w) for w in words])}

    return predict
