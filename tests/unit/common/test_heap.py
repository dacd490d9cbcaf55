"""The garbage collector's pauses, observed (common/heap.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry

from common.heap import GcPauses

ROOT = Path(__file__).resolve().parents[3]


def pauses(registry: CollectorRegistry, generation: int) -> float:
    return registry.get_sample_value("inferno_gc_pause_seconds_count",
                                     {"generation": str(generation)}) or 0.0


def test_every_collection_is_observed_by_generation_while_started() -> None:
    registry = CollectorRegistry()
    watch = GcPauses(registry)
    watch.start()
    try:
        gc.collect(0)
        gc.collect(2)
        assert pauses(registry, 0) >= 1 and pauses(registry, 2) >= 1
        assert (registry.get_sample_value("inferno_gc_pause_seconds_sum", {"generation": "2"})
                or 0.0) > 0
    finally:
        watch.stop()
    before = pauses(registry, 2)
    gc.collect(2)
    assert pauses(registry, 2) == before, "a stopped watch observes nothing"
    watch.stop()  # twice is harmless


# prometheus-client's multiprocess values share one non-reentrant lock per process, and creating
# a labelled child allocates while holding it. With a collection at every allocation, a gc
# callback that takes that lock waits for itself at once (prometheus/client_python#322).
_CHILDREN_UNDER_GC = textwrap.dedent("""
    import gc, os
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.multiprocess import MultiProcessCollector
    from common.heap import GcPauses

    registry = CollectorRegistry()
    watch = GcPauses(registry)
    watch.start()
    requests = Counter("requests", "Requests.", ["n"], registry=registry)
    gc.set_threshold(1)
    for n in range(300):
        requests.labels(str(n)).inc()
    gc.set_threshold(700)
    watch.stop()
    merged = CollectorRegistry()
    MultiProcessCollector(merged, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    print(merged.get_sample_value("inferno_gc_pause_seconds_count", {"generation": "0"}))
""")


def test_labelled_metrics_are_created_under_constant_collections_in_multiprocess_mode(
        tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILDREN_UNDER_GC], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("deadlocked: creating labelled metric children while every "
                             "allocation starts a collection did not finish in 60 s") from None
    assert done.returncode == 0, done.stderr
    # ... and every one of those collections is in the process's multiprocess file.
    assert float(done.stdout) >= 300, done.stdout
