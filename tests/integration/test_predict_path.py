"""docs/architecture.md names the modules an embedded v1 predict enters, in order: a profiler on
every thread follows a real one (tests/predict_path.py) and must find exactly those."""

from __future__ import annotations

from pathlib import Path

from common.settings import FacadeSettings, WorkerSettings
from inferno.embedded import Embedded
from tests.predict_path import PathTrace, documented, record_predict

MODELS = Path(__file__).resolve().parents[2] / "models"


async def test_an_embedded_v1_predict_enters_the_documented_modules_in_order() -> None:
    trace = PathTrace()
    # No background loop may run while the predict is recorded: heartbeats far apart, and no
    # early one reporting the predict's statistics.
    with trace.installed():
        embedded = await Embedded.start(
            FacadeSettings(repo_root=MODELS, heartbeat_interval_s=600, gc_freeze=False),
            WorkerSettings(repo_root=MODELS, preload=["bag"], device="cpu",
                           heartbeat_interval_s=600, statistics_interval_s=0,
                           gc_freeze=False))
        try:
            assert await embedded.wait_ready(30)
            await record_predict(embedded.facade.app, trace)
        finally:
            await embedded.aclose()
    assert trace.modules() == documented("embedded")
