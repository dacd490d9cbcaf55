"""Turn measurements into the printed table or the ``--json`` document.

Numbers are printed as measured; nothing here judges them. The ``server/direct`` column is the
server's rows/s over the direct baseline's rows/s at the batch size the server formed: how much
of the model's own throughput survives the serving path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bench.direct import SLICES, DirectResult
from bench.load import LoadOutcome
from bench.metrics import Window

__all__ = ["LevelRow", "Report", "render_json", "render_table"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


@dataclass(frozen=True, slots=True)
class LevelRow:
    concurrency: int
    requests: int
    errors: int
    window_s: float
    req_per_s: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    batches: int | None
    mean_batch: float | None
    infer_ms_per_batch: float | None
    client_cpu_pct: float | None
    """CPU the load generator used, in % of one core (``None`` for wrk)."""

    @classmethod
    def from_outcome(cls, outcome: LoadOutcome, rows_per_request: int) -> LevelRow:
        window = (Window(outcome.metrics_before, outcome.metrics_after)
                  if outcome.metrics_before and outcome.metrics_after else None)
        rps = outcome.requests / outcome.window_s if outcome.window_s > 0 else 0.0
        return cls(
            concurrency=outcome.concurrency, requests=outcome.requests, errors=outcome.errors,
            window_s=outcome.window_s, req_per_s=rps, rows_per_s=rps * rows_per_request,
            p50_ms=_ms(outcome.p50_s), p99_ms=_ms(outcome.p99_s), mean_ms=_ms(outcome.mean_s),
            max_ms=_ms(outcome.max_s), batches=window.batches if window else None,
            mean_batch=window.mean_batch if window else None,
            infer_ms_per_batch=window.infer_ms_per_batch if window else None,
            client_cpu_pct=(100.0 * outcome.client_cpu_s / outcome.window_s
                            if outcome.client_cpu_s and outcome.window_s > 0 else None))

    @property
    def direct_batch(self) -> int | None:
        """The batch size the direct baseline is compared at: the server's mean, rounded."""
        return None if self.mean_batch is None else max(1, round(self.mean_batch))

    def progress(self) -> str:
        return (f"c={self.concurrency}: {self.req_per_s:.0f} req/s, p50 {_fmt(self.p50_ms, 2)} ms, "
                f"p99 {_fmt(self.p99_ms, 2)} ms, mean batch {_fmt(self.mean_batch, 2)}, "
                f"errors {self.errors}, client cpu {_fmt(self.client_cpu_pct, 0)} %")


@dataclass(frozen=True, slots=True)
class Report:
    config: dict[str, Any]
    levels: list[LevelRow]
    direct: list[DirectResult]
    direct_error: str | None = None

    def direct_at(self, batch: int | None) -> DirectResult | None:
        return next((d for d in self.direct if d.batch == batch), None)

    @property
    def errors(self) -> int:
        return sum(level.errors for level in self.levels)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_COLUMNS = (("concurrency", 11), ("req/s", 9), ("p50 ms", 8), ("p99 ms", 8),
            ("mean batch", 10), ("infer ms/batch", 14), ("errors", 6), ("client cpu%", 11),
            ("direct rows/s @batch", 20), ("server/direct", 13))


def render_table(report: Report) -> str:
    c = report.config
    lines = [
        f"model {c['model']} v{c['version']}, {c['protocol']} body {c['body_bytes']} B, "
        f"{c['rows_per_request']} row(s)/request, {c['server']} at {c['url']}, "
        f"driver {c['driver']}, {c['duration_s']:g} s window after {c['warmup_s']:g} s warm-up",
        f"{c['cpus']} CPUs, 1-min load average {c['loadavg_start']} at start, "
        f"{c['loadavg_end']} at end (anything else running skews these numbers)",
        "",
        "  ".join(name.rjust(width) for name, width in _COLUMNS),
    ]
    for level in report.levels:
        direct = report.direct_at(level.direct_batch)
        ratio = (f"{100.0 * level.rows_per_s / direct.rows_per_s:.0f} %"
                 if direct and direct.rows_per_s > 0 else "-")
        cells = (str(level.concurrency), f"{level.req_per_s:.1f}", _fmt(level.p50_ms, 2),
                 _fmt(level.p99_ms, 2), _fmt(level.mean_batch, 2),
                 _fmt(level.infer_ms_per_batch, 3), str(level.errors),
                 _fmt(level.client_cpu_pct, 0),
                 f"{direct.rows_per_s:.0f} @{direct.batch}" if direct else "-", ratio)
        lines.append("  ".join(cell.rjust(width) for cell, (_, width) in zip(
            cells, _COLUMNS, strict=True)))
    lines.append("")
    if report.direct:
        first = report.direct[0]
        lines.append(f"direct (torch.jit in the bench process, {first.device}, "
                     f"{first.threads} torch threads, best of {SLICES} slices of "
                     f"{c['direct_duration_s'] / SLICES:g} s):")
        lines.append(f"{'batch':>7}  {'calls/s':>10}  {'rows/s':>10}")
        lines.extend(f"{d.batch:>7}  {d.calls_per_s:>10.0f}  {d.rows_per_s:>10.0f}"
                     for d in report.direct)
    else:
        lines.append(f"direct baseline skipped: {report.direct_error or 'not requested'}")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    levels = []
    for level in report.levels:
        direct = report.direct_at(level.direct_batch)
        levels.append({**asdict(level), "direct_batch": level.direct_batch,
                       "direct_rows_per_s": direct.rows_per_s if direct else None})
    return json.dumps({"config": report.config, "levels": levels,
                       "direct": [asdict(d) for d in report.direct],
                       "direct_error": report.direct_error, "errors": report.errors}, indent=2)
