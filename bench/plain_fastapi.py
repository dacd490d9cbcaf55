"""The plain FastAPI baseline: the server a user would write by hand, with none of Inferno.

    python -m bench.plain_fastapi --repo models --model mlp [--host 127.0.0.1] [--port 8000]

One FastAPI app in one uvicorn process (uvloop, httptools, access log off), the model's newest
TorchScript artifact loaded at start-up, and one route, ``POST /v1/models/{name}:predict``, taking
the v1 JSON body the bench sends (``{"inputs": {"x": {"data": [[...]]}}}``). The route is a plain
``def``, as FastAPI advises for blocking work: it runs in the thread pool, decodes each input with
``torch.tensor``, calls the model once for this request (no batching, no queue, no deadline) and
returns the outputs as ``{"data": [...]}`` lists. Torch keeps its own default thread count (one
per core, as a hand-written server gets) unless ``--torch-threads`` / ``INFERNO_TORCH_THREADS``
sets one for every server.
The repository is read with Inferno's reader only to find the artifact and the tensor names.

``python -m bench --compare`` starts it as a subprocess (``PlainServer``) on a free port, like
``inferno serve``, and stops it the same way (SIGTERM: uvicorn's graceful shutdown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.server import ServerProcess

__all__ = ["PlainServer", "PredictRequest", "create_app"]


class Tensor(BaseModel):
    data: list[Any]


class PredictRequest(BaseModel):
    inputs: dict[str, Tensor]


class PlainServer(ServerProcess):
    """``python -m bench.plain_fastapi`` as a subprocess, serving one model."""

    def __init__(self, model: str, host: str = "127.0.0.1", port: int = 0,
                 repo: str = "models", ready_timeout_s: float = 120.0) -> None:
        super().__init__(host, port, repo, ready_timeout_s)
        self.model = model

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.plain_fastapi", "--host", self.host,
                "--port", str(self.port), "--repo", self.repo or "models", "--model", self.model]


def create_app(repo: Path, name: str) -> Any:
    """The FastAPI app serving the newest version of ``name`` from ``repo``."""
    import torch
    from fastapi import FastAPI, HTTPException

    from common.model.repository import ModelRepository
    from common.settings import WorkerSettings

    config = (entry := ModelRepository(repo).get(name)).config
    if config.artifact is None:
        raise ValueError(f"model '{name}' has no TorchScript artifact")
    if threads := WorkerSettings().torch_threads:
        torch.set_num_threads(threads)
    model = torch.jit.load(str(entry.directory / config.artifact), map_location="cpu").eval()
    inputs = [(s.name, getattr(torch, s.dtype.value)) for s in config.signature.inputs]
    outputs = [s.name for s in config.signature.outputs]

    app = FastAPI()

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/models/{model_name}:predict")
    def predict(model_name: str, request: PredictRequest) -> dict[str, Any]:
        if model_name != name:
            raise HTTPException(404, f"no model '{model_name}'")
        try:
            args = [torch.tensor(request.inputs[n].data, dtype=dtype) for n, dtype in inputs]
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(422, f"bad inputs: {exc}") from exc
        with torch.inference_mode():
            result = model(*args)
        tensors = result if isinstance(result, (tuple, list)) else (result,)
        return {"model": name, "version": config.version, "outputs": {
            n: {"data": t.tolist()} for n, t in zip(outputs, tensors, strict=True)}}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default="models")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(create_app(Path(args.repo), args.model), host=args.host, port=args.port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
