"""Turn measurements into the printed table or the ``--json`` document.

Numbers are printed as measured; nothing here judges them. The ``server/direct`` column is the
server's rows/s over the direct baseline's rows/s at the batch size the server formed: how much
of the model's own throughput survives the serving path. ``model busy%`` is the model's time
over the window (summed over workers): near 100 % per worker, the model is the bottleneck.
``cpu ms/req`` and ``cores`` are the servers' own CPU over the window (``process_cpu_seconds_total``
of every process): the embedded server's, or the facades' + the workers' (a server with no
metrics, the bare gRPC floor: its process's, from ``/proc``); a role near 1.00 core is a
single-threaded process at its limit. ``broker ms/req`` and ``redis ms/req`` are the CPU ms per
request of a distributed run's RabbitMQ and Redis, each read from ``/proc`` by the pid listening
on its URL's port (JSON ``broker_cpu_ms``, ``redis_cpu_ms``); unknown (``-``, ``null``) in an
embedded run, for a remote service or with ``--driver wrk``; the columns are shown when some
level has them.
``machine busy%`` is every core's busy share in the window (``/proc/stat``: servers, broker,
load generator and anything else): near 100 the machine itself is the limit.
``rows/s`` is shown when a request carries several rows (``--rows``). The JSON document also
has ``server_ms``, the mean predict latency the facades measured themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bench.direct import SLICES, DirectResult
from bench.load import LoadOutcome
from bench.metrics import Window

_ROLES = ("facade", "worker", "embedded")

__all__ = ["LevelRow", "Report", "fmt", "json_levels", "json_run", "render_direct", "render_json",
           "render_levels", "render_table"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


def _per_request(cpu_s: float | None, requests: int) -> float | None:
    """CPU milliseconds per request of a process read from ``/proc``."""
    return _ms(cpu_s / requests) if cpu_s is not None and requests else None


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
    model_busy_pct: float | None = None
    """Model time over the window, summed over workers, in % of the window: 100 % per worker
    (at ``max_concurrency: 1``) means a model call was running at every moment, i.e. the model
    is the bottleneck; well below, the serving path is."""
    server_ms: float | None = None
    """Mean predict latency the facades measured, parse to response (the facades' metrics)."""
    facade_cpu_ms: float | None = None
    """CPU milliseconds per request of the facade processes (``process_cpu_seconds_total``)."""
    worker_cpu_ms: float | None = None
    embedded_cpu_ms: float | None = None
    machine_busy_pct: float | None = None
    """Busy share of all the machine's cores in the window: near 100, the machine is the limit."""
    process_cpu_ms: float | None = None
    """CPU milliseconds per request of a server with no metrics, read from ``/proc`` (the bare
    gRPC floor, ``bench.grpc_floor``)."""
    broker_cpu_ms: float | None = None
    """CPU milliseconds per request of the broker, read from ``/proc`` (a local one only)."""
    redis_cpu_ms: float | None = None
    """CPU milliseconds per request of Redis, likewise."""

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
                            if outcome.client_cpu_s and outcome.window_s > 0 else None),
            model_busy_pct=(100.0 * window.infer_seconds / outcome.window_s
                            if window and outcome.window_s > 0 else None),
            server_ms=window.server_ms if window else None,
            machine_busy_pct=outcome.machine_busy_pct,
            process_cpu_ms=_per_request(outcome.server_cpu_s, outcome.requests),
            broker_cpu_ms=_per_request(outcome.broker_cpu_s, outcome.requests),
            redis_cpu_ms=_per_request(outcome.redis_cpu_s, outcome.requests),
            **{f"{role}_cpu_ms": window.cpu_ms_per_request(role, outcome.requests) if window
               else None for role in _ROLES})

    @property
    def _cpu_ms(self) -> list[float]:
        """CPU ms per request of the roles present: the embedded server's, or facade, worker, or
        the metric-less server's."""
        return [ms for ms in (self.embedded_cpu_ms, self.facade_cpu_ms, self.worker_cpu_ms,
                              self.process_cpu_ms) if ms is not None]

    @property
    def server_cpu(self) -> str:
        """CPU ms per request, per role: ``facade+worker``, or the embedded server's alone."""
        return "+".join(f"{ms:.2f}" for ms in self._cpu_ms) or "-"

    @property
    def server_cpu_ms(self) -> float | None:
        """CPU ms per request of every server process together; ``None`` when none reported."""
        return sum(self._cpu_ms) if self._cpu_ms else None

    @property
    def server_cores(self) -> str:
        """Cores busy per role over the window, in the order of ``server_cpu``."""
        return "+".join(f"{ms * self.req_per_s / 1000:.2f}" for ms in self._cpu_ms) or "-"

    @property
    def direct_batch(self) -> int | None:
        """The batch size the direct baseline is compared at: the server's mean, rounded."""
        return None if self.mean_batch is None else max(1, round(self.mean_batch))

    def progress(self) -> str:
        return (f"c={self.concurrency}: {self.req_per_s:.0f} req/s, p50 {fmt(self.p50_ms, 2)} ms, "
                f"p99 {fmt(self.p99_ms, 2)} ms, mean batch {fmt(self.mean_batch, 2)}, "
                f"errors {self.errors}, client cpu {fmt(self.client_cpu_pct, 0)} %")


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


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_COLUMNS = (("concurrency", 11), ("req/s", 9), ("rows/s", 9), ("p50 ms", 8), ("p99 ms", 8),
            ("mean batch", 10), ("infer ms/batch", 14), ("model busy%", 11),
            ("errors", 6), ("cpu ms/req", 10), ("cores", 9), ("broker ms/req", 13),
            ("redis ms/req", 12), ("machine busy%", 13),
            ("client cpu%", 11), ("direct rows/s @batch", 20), ("server/direct", 13))


_SERVICES = {"broker ms/req": "broker_cpu_ms", "redis ms/req": "redis_cpu_ms"}
"""The columns of the services' CPU, and their fields."""


def _cells(report: Report, level: LevelRow) -> dict[str, str]:
    direct = report.direct_at(level.direct_batch)
    ratio = (f"{100.0 * level.rows_per_s / direct.rows_per_s:.0f} %"
             if direct and direct.rows_per_s > 0 else "-")
    return {"concurrency": str(level.concurrency), "req/s": f"{level.req_per_s:.1f}",
            "rows/s": f"{level.rows_per_s:.0f}", "p50 ms": fmt(level.p50_ms, 2),
            "p99 ms": fmt(level.p99_ms, 2),
            "mean batch": fmt(level.mean_batch, 2),
            "infer ms/batch": fmt(level.infer_ms_per_batch, 3),
            "model busy%": fmt(level.model_busy_pct, 0), "errors": str(level.errors),
            "cpu ms/req": level.server_cpu, "cores": level.server_cores,
            **{name: fmt(getattr(level, field), 2) for name, field in _SERVICES.items()},
            "machine busy%": fmt(level.machine_busy_pct, 0),
            "client cpu%": fmt(level.client_cpu_pct, 0),
            "direct rows/s @batch": f"{direct.rows_per_s:.0f} @{direct.batch}" if direct else "-",
            "server/direct": ratio}


def _threads(config: dict[str, Any]) -> str:
    threads = config.get("torch_threads")
    return f", {threads} torch thread(s) per server process" if threads else ""


def _shown(report: Report, name: str) -> bool:
    """rows/s only when a request has several rows; the broker's and Redis's CPU only when some
    level read them (a local broker)."""
    if name == "rows/s":
        return bool(report.config["rows_per_request"] > 1)
    if name in _SERVICES:
        return any(getattr(level, _SERVICES[name]) is not None for level in report.levels)
    return True


def render_levels(report: Report) -> str:
    """The run's header and one line per level (some columns only when they apply,
    ``_shown``)."""
    c = report.config
    columns = [(name, width) for name, width in _COLUMNS if _shown(report, name)]
    lines = [
        f"model {c['model']} v{c['version']}, {c['protocol']} body {c['body_bytes']} B, "
        f"{c['rows_per_request']} row(s)/request, {c['server']} at {c['url']}, "
        f"driver {c['driver']}, {c['duration_s']:g} s window after {c['warmup_s']:g} s warm-up",
        f"{c['cpus']} CPUs{_threads(c)}, 1-min load average {c['loadavg_start']} at start, "
        f"{c['loadavg_end']} at end (anything else running skews these numbers)",
        "",
        "  ".join(name.rjust(width) for name, width in columns),
    ]
    for level in report.levels:
        cells = _cells(report, level)
        lines.append("  ".join(cells[name].rjust(width) for name, width in columns))
    return "\n".join(lines)


def render_direct(report: Report) -> str:
    c = report.config
    if not report.direct:
        return f"direct baseline skipped: {report.direct_error or 'not requested'}"
    first = report.direct[0]
    single = report.direct_at(1)
    lines = [f"direct (the model called in the bench process, {first.device}, "
             f"{first.threads} torch threads, best of {SLICES} slices of "
             f"{c['direct_duration_s'] / SLICES:g} s; vs batch 1: rows/s over batch 1's):",
             f"{'batch':>7}  {'calls/s':>10}  {'rows/s':>10}  {'vs batch 1':>10}"]
    lines.extend(f"{d.batch:>7}  {d.calls_per_s:>10.0f}  {d.rows_per_s:>10.0f}  "
                 + (f"{d.rows_per_s / single.rows_per_s:>9.1f}x" if single and single.rows_per_s
                    else f"{'-':>10}")
                 for d in report.direct)
    return "\n".join(lines)


def render_table(report: Report) -> str:
    return f"{render_levels(report)}\n\n{render_direct(report)}"


def json_levels(report: Report) -> list[dict[str, Any]]:
    levels = []
    for level in report.levels:
        direct = report.direct_at(level.direct_batch)
        levels.append({**asdict(level), "direct_batch": level.direct_batch,
                       "direct_rows_per_s": direct.rows_per_s if direct else None})
    return levels


def json_run(report: Report) -> dict[str, Any]:
    """One run in a several-run document: its config, levels and error count."""
    return {"config": report.config, "levels": json_levels(report), "errors": report.errors}


def render_json(report: Report) -> str:
    return json.dumps({"config": report.config, "levels": json_levels(report),
                       "direct": [asdict(d) for d in report.direct],
                       "direct_error": report.direct_error, "errors": report.errors}, indent=2)
