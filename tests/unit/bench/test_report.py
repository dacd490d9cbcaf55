"""One run's table and JSON (bench/report.py): the broker's and Redis's CPU per request, read
from ``/proc`` over each level's window, as columns when some level has them and as fields."""

from __future__ import annotations

import json

from bench.load import LoadOutcome
from bench.report import LevelRow, Report, render_json, render_levels

CONFIG = {"model": "mlp", "version": 1, "protocol": "v1", "body_bytes": 1000,
          "rows_per_request": 1, "server": "cluster of 1 facade, 1 worker",
          "url": "http://127.0.0.1:8000", "driver": "python", "duration_s": 1.0,
          "warmup_s": 0.2, "cpus": 2, "loadavg_start": 0.5, "loadavg_end": 0.7}


def _level(concurrency: int, broker_cpu_s: float | None, redis_cpu_s: float | None
           ) -> LevelRow:
    """A level of 500 requests in its 1 s window."""
    return LevelRow.from_outcome(LoadOutcome(
        concurrency=concurrency, requests=500, errors=0, window_s=1.0, p50_s=0.002,
        p99_s=0.004, mean_s=0.002, max_s=0.005, metrics_before=None, metrics_after=None,
        broker_cpu_s=broker_cpu_s, redis_cpu_s=redis_cpu_s), 1)


def _lines(*levels: LevelRow) -> list[str]:
    """The table's header line, then one line per level."""
    return render_levels(Report(CONFIG, list(levels), [])).splitlines()[3:]


def _column(lines: list[str], name: str) -> list[str]:
    """Each level's cell under ``name`` (right-aligned under it)."""
    end = lines[0].index(name) + len(name)
    return [line[end - len(name):end].strip() for line in lines[1:]]


def test_the_services_cpu_per_request_is_over_the_window_requests() -> None:
    level = _level(1, 0.25, 0.05)
    assert level.broker_cpu_ms == 0.5 and level.redis_cpu_ms == 0.1
    assert _level(1, None, None).broker_cpu_ms is None


def test_the_table_shows_the_broker_and_redis_columns_unknown_as_a_dash() -> None:
    lines = _lines(_level(1, 0.25, 0.05), _level(16, None, None))
    assert "cores  broker ms/req  redis ms/req  machine busy%" in lines[0]
    assert _column(lines, "broker ms/req") == ["0.50", "-"]
    assert _column(lines, "redis ms/req") == ["0.10", "-"]


def test_a_run_without_a_local_broker_has_no_such_columns() -> None:
    header = _lines(_level(1, None, None))[0]
    assert "broker ms/req" not in header and "redis ms/req" not in header


def test_the_json_levels_hold_them_null_when_unknown() -> None:
    document = json.loads(render_json(Report(
        CONFIG, [_level(1, 0.25, 0.05), _level(16, None, None)], [])))
    assert [(lvl["broker_cpu_ms"], lvl["redis_cpu_ms"]) for lvl in document["levels"]] == [
        (0.5, 0.1), (None, None)]
