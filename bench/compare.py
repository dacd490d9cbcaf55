"""Several runs in one invocation (``--compare``, ``--mode both``, ``--workers 1,2``): their tables
and how they compare, level by level.

Each candidate run is compared with a baseline run at every concurrency both measured: the req/s
ratio candidate/baseline (rows/s has the same ratio: both send the same request) and the added
p50 latency, candidate - baseline. Embedded vs distributed, that difference is what the queue hop
(facade → RabbitMQ → worker → reply) adds to a request; between worker counts, the ratio is the
scaling; plain FastAPI vs embedded, it is what Inferno costs over the hand-written server.
The direct baseline is measured once, after every run, and shown once.

The side-by-side table (``side_by_side``) puts every run's req/s, p50, p99 and p99/p50 at each
level under one another, with req/s over the embedded run's, the machine's busy share and the
ceiling that share implies (what the same CPU per request would give on every core: the floor
under a ratio the machine cannot reach), and ends with the c=1 figures issue 11 asks for:
embedded p50 against plain FastAPI p50, distributed p50 minus the bare broker RPC, and the
model's own batch-1 call inside that difference.

With several worker counts (``--workers 1,2,4``, ``--scaling``) the scaling table (``scaling``)
gives each count's req/s over the first count's, the linear ideal beside it, and the model time
per worker: near 100 % for every count means no worker sat idle while others had work.

``--compare-http-servers`` (``http_server_rows``): per mode and level, each HTTP server's rounds
and their mean, with req/s and p50 over uvicorn's mean: a difference smaller than the spread of
one server's rounds is noise. ``table_line`` lays out a row of any of the bench's tables.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.report import LevelRow, Report, fmt, json_run, render_direct, render_levels
from bench.server import UVICORN

__all__ = ["Compared", "Comparison", "HttpServerRow", "ScalingRow", "SideBySide", "SideRow",
           "Single", "compare", "comparisons", "http_server_rows", "ratio",
           "render_http_servers_json", "render_http_servers_table", "render_suite_json",
           "render_suite_table", "scaling", "side_by_side", "table_head", "table_line"]


@dataclass(frozen=True, slots=True)
class Compared:
    concurrency: int
    req_per_s_ratio: float | None
    p50_added_ms: float | None


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: str
    candidate: str
    queue_hop: bool
    """Embedded baseline, distributed candidate: the p50 difference is the queue hop's cost."""
    levels: list[Compared]
    floor_ms: float | None = None
    """Queue hop only: p50 of a bare aio-pika RPC through the same broker (``bench.rpc_floor``),
    what the hop costs at c=1 before Inferno does anything."""


def compare(baseline: Report, candidate: Report, floor_ms: float | None = None) -> Comparison:
    by_level = {level.concurrency: level for level in baseline.levels}
    compared = []
    for level in candidate.levels:
        base = by_level.get(level.concurrency)
        if base is None:
            continue
        ratio = level.req_per_s / base.req_per_s if base.req_per_s > 0 else None
        added = (level.p50_ms - base.p50_ms
                 if level.p50_ms is not None and base.p50_ms is not None else None)
        compared.append(Compared(level.concurrency, ratio, added))
    queue_hop = (baseline.config["mode"], candidate.config["mode"]) == ("embedded", "distributed")
    return Comparison(
        baseline=baseline.config["label"], candidate=candidate.config["label"],
        queue_hop=queue_hop, levels=compared, floor_ms=floor_ms if queue_hop else None)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _render_comparison(comparison: Comparison) -> str:
    added = "added p50 ms (queue hop)" if comparison.queue_hop else "added p50 ms"
    lines = [f"{comparison.candidate} vs {comparison.baseline}:",
             f"{'concurrency':>11}  {'req/s ratio':>11}  {added:>24}"]
    lines.extend(f"{c.concurrency:>11}  {_fmt(c.req_per_s_ratio, '.2f'):>11}  "
                 f"{_fmt(c.p50_added_ms, '+.2f'):>24}" for c in comparison.levels)
    single = next((c for c in comparison.levels if c.concurrency == 1), None)
    if comparison.floor_ms is not None and single is not None and single.p50_added_ms is not None:
        lines.append(f"at c=1 the queue hop adds {single.p50_added_ms:+.2f} ms: a bare aio-pika "
                     f"RPC through the same broker takes {comparison.floor_ms:.2f} ms (bench."
                     f"rpc_floor), Inferno's own share is "
                     f"{single.p50_added_ms - comparison.floor_ms:+.2f} ms")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SideRow:
    concurrency: int
    server: str
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    p99_over_p50: float | None
    req_per_s_vs_embedded: float | None
    """This run's req/s over the embedded run's at the same level."""
    machine_busy_pct: float | None
    """Every core's busy share in the window: near 100, the machine, not the server, is the
    limit."""
    ceiling_vs_embedded: float | None
    """The req/s this run's CPU per request would allow with every core busy (req/s over the
    machine's busy share), over the embedded run's req/s: a ratio above it cannot be reached on
    this machine without making a request cheaper, whatever the processes' layout."""


@dataclass(frozen=True, slots=True)
class Single:
    """The c=1 latencies compared (``None`` where a run or the floor is missing)."""

    plain_p50_ms: float | None
    embedded_p50_ms: float | None
    embedded_over_plain_p50: float | None
    distributed_p50_ms: float | None
    floor_ms: float | None
    distributed_minus_floor_ms: float | None
    model_ms: float | None = None
    """One direct call of the model at batch 1 (the direct baseline's best slice): a c=1
    request pays it on top of the RPC, so the RPC floor + this is distributed c=1's floor."""


@dataclass(frozen=True, slots=True)
class SideBySide:
    rows: list[SideRow]
    c1: Single


def ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _p50_at_1(report: Report | None) -> float | None:
    level = next((lvl for lvl in report.levels if lvl.concurrency == 1), None) if report else None
    return level.p50_ms if level else None


def _model_ms_at_1(report: Report) -> float | None:
    single = report.direct_at(1)
    return 1000.0 / single.calls_per_s if single and single.calls_per_s > 0 else None


def side_by_side(reports: list[Report], floor_ms: float | None = None) -> SideBySide:
    by_mode = {mode: next((r for r in reports if r.config["mode"] == mode), None)
               for mode in ("plain", "embedded", "distributed")}
    embedded = by_mode["embedded"]
    embedded_rps = {lvl.concurrency: lvl.req_per_s for lvl in embedded.levels} if embedded else {}
    rows = [SideRow(level.concurrency, report.config["label"], level.req_per_s, level.p50_ms,
                    level.p99_ms, ratio(level.p99_ms, level.p50_ms),
                    ratio(level.req_per_s, embedded_rps.get(level.concurrency)),
                    level.machine_busy_pct,
                    ratio(ratio(100.0 * level.req_per_s, level.machine_busy_pct),
                           embedded_rps.get(level.concurrency)))
            for concurrency in dict.fromkeys(lvl.concurrency for r in reports for lvl in r.levels)
            for report in reports for level in report.levels if level.concurrency == concurrency]
    plain, emb, dist = (_p50_at_1(by_mode[m]) for m in ("plain", "embedded", "distributed"))
    return SideBySide(rows, Single(
        plain_p50_ms=plain, embedded_p50_ms=emb, embedded_over_plain_p50=ratio(emb, plain),
        distributed_p50_ms=dist, floor_ms=floor_ms,
        distributed_minus_floor_ms=dist - floor_ms if dist is not None and floor_ms is not None
        else None, model_ms=_model_ms_at_1(reports[0])))


def _render_side_by_side(table: SideBySide) -> str:
    width = max(len(row.server) for row in table.rows)
    lines = ["side by side:",
             f"{'concurrency':>11}  {'server':<{width}}  {'req/s':>9}  {'p50 ms':>8}  "
             f"{'p99 ms':>8}  {'p99/p50':>7}  {'req/s vs embedded':>17}  "
             f"{'machine busy%':>13}  {'ceiling vs embedded':>19}"]
    lines.extend(f"{r.concurrency:>11}  {r.server:<{width}}  {r.req_per_s:>9.1f}  "
                 f"{_fmt(r.p50_ms, '.2f'):>8}  {_fmt(r.p99_ms, '.2f'):>8}  "
                 f"{_fmt(r.p99_over_p50, '.2f'):>7}  {_fmt(r.req_per_s_vs_embedded, '.2f'):>17}  "
                 f"{_fmt(r.machine_busy_pct, '.0f'):>13}  {_fmt(r.ceiling_vs_embedded, '.2f'):>19}"
                 for r in table.rows)
    c1 = table.c1
    if c1.embedded_over_plain_p50 is not None and c1.embedded_p50_ms is not None:
        assert c1.plain_p50_ms is not None
        lines.append(f"c=1 p50: embedded {c1.embedded_p50_ms:.2f} ms vs plain FastAPI "
                     f"{c1.plain_p50_ms:.2f} ms ({c1.embedded_over_plain_p50:.2f}x, "
                     f"{c1.embedded_p50_ms - c1.plain_p50_ms:+.2f} ms)")
    if c1.distributed_minus_floor_ms is not None:
        lines.append(f"c=1 p50: distributed {c1.distributed_p50_ms:.2f} ms - bare aio-pika RPC "
                     f"{c1.floor_ms:.2f} ms (bench.rpc_floor) = "
                     f"{c1.distributed_minus_floor_ms:.2f} ms")
        if c1.model_ms is not None:
            lines.append(f"  of which the model's own call at batch 1 (direct) is "
                         f"{c1.model_ms:.2f} ms, leaving "
                         f"{c1.distributed_minus_floor_ms - c1.model_ms:.2f} ms for HTTP and "
                         f"Inferno")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ScalingRow:
    concurrency: int
    workers: int
    req_per_s: float
    speedup: float | None
    """req/s over the first worker count's at the same level."""
    ideal: float
    """Workers over the first count: the speedup of perfect scaling."""
    model_busy_pct_per_worker: float | None


def scaling(reports: list[Report]) -> list[ScalingRow]:
    """Each distributed run against the first, level by level; empty unless the worker counts
    differ."""
    runs = [r for r in reports if r.config["mode"] == "distributed"]
    if len({r.config["workers"] for r in runs}) < 2:
        return []
    first = runs[0]
    base = {lvl.concurrency: lvl.req_per_s for lvl in first.levels}
    return [ScalingRow(level.concurrency, run.config["workers"], level.req_per_s,
                       ratio(level.req_per_s, base.get(level.concurrency)),
                       run.config["workers"] / first.config["workers"],
                       level.model_busy_pct / run.config["workers"]
                       if level.model_busy_pct is not None else None)
            for run in runs for level in run.levels]


def _render_scaling(rows: list[ScalingRow]) -> str:
    lines = ["scaling:", f"{'concurrency':>11}  {'workers':>7}  {'req/s':>9}  {'speedup':>7}  "
             f"{'ideal':>5}  {'speedup/ideal':>13}  {'model busy % per worker':>23}"]
    lines.extend(f"{r.concurrency:>11}  {r.workers:>7}  {r.req_per_s:>9.1f}  "
                 f"{_fmt(r.speedup, '.2f'):>7}  {r.ideal:>5.2f}  "
                 f"{_fmt(ratio(r.speedup, r.ideal), '.2f'):>13}  "
                 f"{_fmt(r.model_busy_pct_per_worker, '.0f'):>23}" for r in rows)
    return "\n".join(lines)


def render_suite_table(reports: list[Report], comparisons: list[Comparison],
                       floor_ms: float | None = None) -> str:
    parts = [f"== {report.config['label']} ==\n{render_levels(report)}" for report in reports]
    parts += [_render_comparison(c) for c in comparisons]
    parts.append(_render_side_by_side(side_by_side(reports, floor_ms)))
    scaled = scaling(reports)
    if scaled:
        parts.append(_render_scaling(scaled))
    parts.append(render_direct(reports[0]))
    return "\n\n".join(parts)


def render_suite_json(reports: list[Report], comparisons: list[Comparison],
                      floor_ms: float | None = None) -> str:
    first = reports[0]
    document: dict[str, Any] = {
        "runs": list(map(json_run, reports)),
        "comparisons": [asdict(c) for c in comparisons],
        "side_by_side": asdict(side_by_side(reports, floor_ms)),
        "scaling": [asdict(row) for row in scaling(reports)],
        "direct": [asdict(d) for d in first.direct], "direct_error": first.direct_error,
        "errors": sum(r.errors for r in reports)}
    return json.dumps(document, indent=2)


def comparisons(reports: list[Report], floor_ms: float | None = None) -> list[Comparison]:
    """The embedded run against the plain FastAPI one (Inferno's cost over a hand-written
    server), each distributed run against the embedded one (the queue hop, with the broker's own
    round trip ``floor_ms`` when measured), and each further worker count against the first
    (the scaling)."""
    plain = [r for r in reports if r.config["mode"] == "plain"]
    embedded = [r for r in reports if r.config["mode"] == "embedded"]
    distributed = [r for r in reports if r.config["mode"] == "distributed"]
    found = [compare(p, e) for p in plain for e in embedded]
    found += [compare(e, d, floor_ms) for e in embedded for d in distributed]
    found += [compare(distributed[0], d) for d in distributed[1:]]
    return found


def table_line(cells: Mapping[str, str], columns: Sequence[tuple[str, int]], left: str) -> str:
    """One line of a table of ``columns`` (name, width): each cell right-aligned in its width,
    but the ``left`` column's (a name) left-aligned."""
    return "  ".join(cells[name].ljust(width) if name == left else cells[name].rjust(width)
                     for name, width in columns)


def table_head(columns: Sequence[tuple[str, int]], left: str) -> str:
    """The head of a table of ``columns``, aligned as ``table_line`` aligns its rows."""
    return table_line({name: name for name, _ in columns}, columns, left)


@dataclass(frozen=True, slots=True)
class HttpServerRow:
    mode: str
    concurrency: int
    server: str
    """The HTTP server: ``uvicorn`` or ``granian`` (``bench.server.HTTP_SERVERS``)."""
    round: int | None
    """The round; ``None`` on the row of the mean of the server's rounds."""
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_req: float | None
    """The servers' CPU per request: the embedded server's, or the facade's + the worker's
    (the worker is the same under either server)."""
    errors: int
    req_per_s_vs_uvicorn: float | None = None
    """req/s over the mean of uvicorn's rounds at the same mode and level."""
    p50_vs_uvicorn: float | None = None


def _mean(values: Iterable[float | None]) -> float | None:
    """The mean; ``None`` when some value is missing (a round with no latency measured)."""
    known = list(values)
    if not known or any(v is None for v in known):
        return None
    return statistics.fmean(v for v in known if v is not None)


def _http_row(report: Report, round_: int | None, levels: list[LevelRow]) -> HttpServerRow:
    """The row of ``levels`` (one round's, or every round's for their mean)."""
    return HttpServerRow(
        mode=report.config["mode"], concurrency=levels[0].concurrency,
        server=report.config["http_server"], round=round_,
        req_per_s=statistics.fmean(lvl.req_per_s for lvl in levels),
        p50_ms=_mean(lvl.p50_ms for lvl in levels), p99_ms=_mean(lvl.p99_ms for lvl in levels),
        cpu_ms_per_req=_mean(lvl.server_cpu_ms for lvl in levels),
        errors=sum(lvl.errors for lvl in levels))


def http_server_rows(reports: list[Report]) -> list[HttpServerRow]:
    """Per mode and level, each server's rounds then their mean, in the order first run, each
    row over uvicorn's mean (``None`` without a uvicorn run)."""
    rows = []
    for mode in dict.fromkeys(r.config["mode"] for r in reports):
        runs = [r for r in reports if r.config["mode"] == mode]
        for c in dict.fromkeys(lvl.concurrency for r in runs for lvl in r.levels):
            by_server: dict[str, list[HttpServerRow]] = {}
            for server in dict.fromkeys(r.config["http_server"] for r in runs):
                measured = [(r, lvl) for r in runs if r.config["http_server"] == server
                            for lvl in r.levels if lvl.concurrency == c]
                by_server[server] = [
                    *(_http_row(r, r.config["round"], [lvl]) for r, lvl in measured),
                    _http_row(measured[0][0], None, [lvl for _, lvl in measured])]
            base = by_server[UVICORN][-1] if UVICORN in by_server else None
            rows += [replace(row,
                             req_per_s_vs_uvicorn=ratio(row.req_per_s,
                                                        base.req_per_s if base else None),
                             p50_vs_uvicorn=ratio(row.p50_ms, base.p50_ms if base else None))
                     for server_rows in by_server.values() for row in server_rows]
    return rows


_HTTP_COLUMNS = (("concurrency", 11), ("server", 7), ("round", 5), ("req/s", 9), ("p50 ms", 8),
                 ("p99 ms", 8), ("cpu ms/req", 10), ("req/s vs uvicorn", 16),
                 ("p50 vs uvicorn", 14), ("errors", 6))


def _http_cells(row: HttpServerRow) -> dict[str, str]:
    return {"concurrency": str(row.concurrency), "server": row.server,
            "round": "mean" if row.round is None else str(row.round),
            "req/s": f"{row.req_per_s:.1f}", "p50 ms": fmt(row.p50_ms, 2),
            "p99 ms": fmt(row.p99_ms, 2), "cpu ms/req": fmt(row.cpu_ms_per_req, 3),
            "req/s vs uvicorn": fmt(row.req_per_s_vs_uvicorn, 2),
            "p50 vs uvicorn": fmt(row.p50_vs_uvicorn, 2), "errors": str(row.errors)}


def render_http_servers_table(reports: list[Report]) -> str:
    rows = http_server_rows(reports)
    parts = []
    for mode in dict.fromkeys(row.mode for row in rows):
        runs = [r.config for r in reports if r.config["mode"] == mode]
        c, rounds = runs[0], max(run["round"] for run in runs)
        lines = [f"== {mode}: uvicorn vs granian, model {c['model']} v{c['version']}, "
                 f"{c['protocol']} body {c['body_bytes']} B, {c['rows_per_request']} row(s)/"
                 f"request, {rounds} round(s) of {c['duration_s']:g} s after {c['warmup_s']:g} s "
                 f"warm-up ==",
                 f"{c['cpus']} CPUs, 1-min load average {c.get('loadavg_start')} at start, "
                 f"{runs[-1].get('loadavg_end')} at end (anything else running skews these "
                 f"numbers)", table_head(_HTTP_COLUMNS, "server")]
        lines += [table_line(_http_cells(row), _HTTP_COLUMNS, "server") for row in rows
                  if row.mode == mode]
        parts.append("\n".join(lines))
    parts.append("vs uvicorn: over the mean of uvicorn's rounds at that level; cpu ms/req: the "
                 "servers' CPU per request (embedded: facade and worker in one process; "
                 "distributed: the facade's + the worker's, the worker the same under both)")
    return "\n\n".join(parts)


def render_http_servers_json(reports: list[Report]) -> str:
    document = {"runs": list(map(json_run, reports)),
                "http_servers": [asdict(row) for row in http_server_rows(reports)],
                "errors": sum(r.errors for r in reports)}
    return json.dumps(document, indent=2)
