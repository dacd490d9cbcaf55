"""Embedded Inferno servers for API tests: the real facade, worker, broker and store in process.

Each test gets a fresh repository in tmp_path holding the sample models (models/) and the fake
models of tests/models, so admin calls in one test never leak into another.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import FacadeSettings, WorkerSettings
from inferno.embedded import Embedded

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "models"
FAKES = ROOT / "tests" / "models"


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for source in (p for p in (SAMPLES, FAKES) if p.is_dir()):
        for model in source.iterdir():
            if model.is_dir() and not model.name.startswith(("_", ".")):
                shutil.copytree(model, repo / model.name, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def set_yaml(repo: Path, model: str, version: int, **changes: Any) -> None:
    """Override top-level model.yaml keys of a copied model (e.g. queue, batching)."""
    import yaml

    path = repo / model / str(version) / "model.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


Start = Callable[..., "Any"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture
async def start_server(repo: Path) -> AsyncIterator[Start]:
    """``await start_server(preload=[...], gc_freeze=False, **facade_settings)`` → (Embedded,
    httpx client). ``gc_freeze`` freezes the heap of this test process (undone afterwards)."""
    started: list[tuple[Embedded, httpx.AsyncClient]] = []

    async def start(preload: list[str] | None = None, wait: bool = True,
                    gc_freeze: bool = False, **facade: Any
                    ) -> tuple[Embedded, httpx.AsyncClient]:
        fs = FacadeSettings(**{"repo_root": repo, "access_log": False,
                               "heartbeat_interval_s": 0.5, "admin_timeout_s": 20,
                               "gc_freeze": gc_freeze, **facade})
        ws = WorkerSettings(repo_root=repo, preload=preload if preload is not None else
                            ["mlp", "bag"], device="cpu", heartbeat_interval_s=0.5,
                            drain_timeout_s=5, gc_freeze=gc_freeze)
        embedded = await Embedded.start(fs, ws)
        assert not wait or await embedded.wait_ready(30), "preloaded models did not come up"
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=embedded.facade.app),
                                   base_url="http://inferno", timeout=30)
        started.append((embedded, client))
        return embedded, client

    yield start
    for embedded, client in started:
        await client.aclose()
        await embedded.aclose()
    gc.unfreeze()  # what a test froze is collectable again for the tests after it


@pytest.fixture
async def client(start_server: Start) -> httpx.AsyncClient:
    _, http = await start_server()
    return http


def x_rows(rows: int, value: float = 0.5) -> dict[str, Any]:
    return {"x": {"data": [[value + r] * 256 for r in range(rows)]}}


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def slow_body(delay_ms: float, rows: int = 1, timeout_ms: int | None = None) -> dict[str, Any]:
    """A request for the fake ``slow`` model: it holds its runner slot for ``delay_ms``."""
    body: dict[str, Any] = {"inputs": {"x": {"data": [[1.0, 2.0]] * rows},
                                       "delay_ms": {"data": [delay_ms] * rows}}}
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    return body
