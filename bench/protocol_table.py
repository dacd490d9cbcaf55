"""``--compare-protocols``: every protocol against the same servers, side by side, and the bare
gRPC floor under them.

One table per Inferno run (embedded, each distributed cluster). At each concurrency, a row per
protocol of ``payload.COMPARED`` (v1 JSON, v2 JSON, v2-binary, gRPC ``ModelInfer``, gRPC
``ModelStreamInfer``), then v2-binary against the same shape of servers with gRPC off (its req/s
and p50 near 1.00: the gRPC server costs REST nothing), then the floor's rows
(``bench.grpc_floor``: the same gRPC clients against a bare ``grpc.aio`` echo, no model, no
Inferno), each with req/s, p50, p99, the time outside the data plane, req/s and p50 over
v2-binary's at that level (the issue's target: gRPC at least 1.00 in req/s at c=16 and c=64, at
most 1.00 in p50 at c=1), the servers' own CPU per request (``LevelRow.server_cpu``: embedded,
facade+worker, or the floor's process), the mean batch and the load generator's CPU. Under each
table two lines per level: what the floor reached against v2-binary (what grpcio alone allows on
this machine before Inferno does anything), and the latency argument in numbers: the data plane
is the same code under REST and gRPC, so gRPC's p50 can match v2-binary's only if its time
outside the plane does, and the bare echo's whole round trip is where that time starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bench.compare import ratio, table_head, table_line
from bench.payload import BASELINE, GRPC, GRPC_PROTOCOLS, GRPC_STREAM
from bench.report import LevelRow, Report, fmt, json_run, render_direct
from bench.runner import FLOOR_LABEL

__all__ = ["ProtocolRow", "ProtocolTable", "protocol_tables", "render_protocols_json",
           "render_protocols_table"]


@dataclass(frozen=True, slots=True)
class ProtocolRow:
    concurrency: int
    protocol: str
    """The protocol; on a floor row ``<protocol> floor (bare grpc.aio echo)``, on the run with
    gRPC off ``v2-binary, gRPC off``."""
    floor: bool
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    outside_ms: float | None
    """Mean latency outside the data plane: the client-observed mean minus the mean the data
    plane measured (transport, server framework, client); on a floor row, with no data plane,
    the whole mean."""
    req_per_s_vs_baseline: float | None
    """req/s over v2-binary's at this level, on the same servers (gRPC on)."""
    p50_vs_baseline: float | None
    """p50 over v2-binary's at this level."""
    server_cpu: str
    """CPU ms per request, per server role (``LevelRow.server_cpu``)."""
    server_cpu_ms: float | None
    """The same summed over every server process."""
    mean_batch: float | None
    client_cpu_pct: float | None
    errors: int


@dataclass(frozen=True, slots=True)
class ProtocolTable:
    label: str
    """The Inferno run: ``embedded`` or a distributed cluster's label."""
    header: list[str]
    rows: list[ProtocolRow]


def _grpc_off(report: Report) -> bool:
    """The run with the servers' gRPC off (``RunPlan.grpc``)."""
    return report.config.get("grpc") is False


def _outside_ms(level: LevelRow, floor: bool) -> float | None:
    if floor or level.mean_ms is None:
        return level.mean_ms
    return None if level.server_ms is None else level.mean_ms - level.server_ms


def _row(report: Report, level: LevelRow, baseline: LevelRow | None) -> ProtocolRow:
    protocol, floor = report.config["protocol"], report.config["mode"] == "floor"
    if floor:
        protocol = f"{protocol} floor ({FLOOR_LABEL})"
    elif _grpc_off(report):
        protocol = f"{protocol}, gRPC off"
    return ProtocolRow(
        concurrency=level.concurrency, protocol=protocol, floor=floor,
        req_per_s=level.req_per_s, p50_ms=level.p50_ms, p99_ms=level.p99_ms,
        outside_ms=_outside_ms(level, floor),
        req_per_s_vs_baseline=ratio(level.req_per_s, baseline.req_per_s if baseline else None),
        p50_vs_baseline=ratio(level.p50_ms, baseline.p50_ms if baseline else None),
        server_cpu=level.server_cpu, server_cpu_ms=level.server_cpu_ms,
        mean_batch=level.mean_batch, client_cpu_pct=level.client_cpu_pct, errors=level.errors)


def _header(runs: list[Report]) -> list[str]:
    c = runs[0].config
    bodies = ", ".join(f"{r.config['protocol']} {r.config['body_bytes']} B" for r in runs
                       if not _grpc_off(r))
    return [f"== {c['label']}: model {c['model']} v{c['version']}, {c['rows_per_request']} "
            f"row(s)/request, {c['duration_s']:g} s window after {c['warmup_s']:g} s warm-up ==",
            f"{c['cpus']} CPUs, 1-min load average {c['loadavg_start']} at start, "
            f"{runs[-1].config['loadavg_end']} at end; request bodies: {bodies}"]


def protocol_tables(reports: list[Report]) -> list[ProtocolTable]:
    """One table per Inferno run (its run with gRPC off included), the floor's rows (if
    measured) in each."""
    floors = [r for r in reports if r.config["mode"] == "floor"]
    tables = []
    for label in dict.fromkeys(r.config["label"] for r in reports if r.config["mode"] != "floor"):
        runs = [r for r in reports if r.config["label"] == label]
        baseline = next((r for r in runs if r.config["protocol"] == BASELINE
                         and not _grpc_off(r)), None)
        base = {lvl.concurrency: lvl for lvl in baseline.levels} if baseline else {}
        rows = [_row(report, level, base.get(level.concurrency))
                for concurrency in dict.fromkeys(lvl.concurrency for r in runs for lvl in r.levels)
                for report in [*runs, *floors] for level in report.levels
                if level.concurrency == concurrency]
        tables.append(ProtocolTable(label, _header(runs), rows))
    return tables


_COLUMNS = (("concurrency", 11), ("protocol", 38), ("req/s", 9), ("p50 ms", 8), ("p99 ms", 8),
            ("outside ms", 10), ("req/s vs v2-binary", 18), ("p50 vs v2-binary", 16),
            ("cpu ms/req", 10), ("mean batch", 10), ("client cpu%", 11), ("errors", 6))


def _cells(row: ProtocolRow) -> dict[str, str]:
    return {"concurrency": str(row.concurrency), "protocol": row.protocol,
            "req/s": f"{row.req_per_s:.1f}", "p50 ms": fmt(row.p50_ms, 2),
            "p99 ms": fmt(row.p99_ms, 2), "outside ms": fmt(row.outside_ms, 2),
            "req/s vs v2-binary": fmt(row.req_per_s_vs_baseline, 2),
            "p50 vs v2-binary": fmt(row.p50_vs_baseline, 2), "cpu ms/req": row.server_cpu,
            "mean batch": fmt(row.mean_batch, 2), "client cpu%": fmt(row.client_cpu_pct, 0),
            "errors": str(row.errors)}


_KINDS = (("unary", GRPC), ("stream", GRPC_STREAM))


def _floor_lines(rows: list[ProtocolRow]) -> list[str]:
    """At one level: what the floor reached against v2-binary, and the latency argument in
    numbers; none without both."""
    baseline = next((r for r in rows if r.protocol == BASELINE), None)
    floors = {r.protocol.split()[0]: r for r in rows if r.floor}
    if baseline is None or not floors:
        return []
    kinds = [(what, floors[protocol]) for what, protocol in _KINDS if protocol in floors]
    reached = "; ".join(
        f"{what} {r.req_per_s:.0f} req/s = {fmt(r.req_per_s_vs_baseline, 2)}x, "
        f"p50 {fmt(r.p50_ms, 2)} ms = {fmt(r.p50_vs_baseline, 2)}x, "
        f"{fmt(r.server_cpu_ms, 3)} ms server CPU per call" for what, r in kinds)
    inferno = ", ".join(f"{r.protocol} {fmt(r.outside_ms, 2)}" for r in rows
                        if r.protocol in GRPC_PROTOCOLS)
    echo = ", ".join(f"{what} {fmt(r.outside_ms, 2)}" for what, r in kinds)
    c = baseline.concurrency
    return [f"c={c}: grpcio alone ({FLOOR_LABEL}, no model) vs v2-binary's "
            f"{baseline.req_per_s:.0f} req/s, p50 {fmt(baseline.p50_ms, 2)} ms, "
            f"{fmt(baseline.server_cpu_ms, 3)} ms server CPU per request: {reached}",
            f"c={c}: the data plane is the same code for both, so gRPC's p50 can be at most "
            f"v2-binary's only if its time outside the plane is at most v2-binary's "
            f"{fmt(baseline.outside_ms, 2)} ms (mean; Inferno's {inferno or '-'}); the bare "
            f"echo's whole round trip: {echo} ms"]


def _render_table(table: ProtocolTable) -> str:
    lines = [*table.header, "",
             table_head(_COLUMNS, "protocol")]
    lines += [table_line(_cells(row), _COLUMNS, "protocol") for row in table.rows]
    lines += ["cpu ms/req: the servers' own CPU per request (embedded; facade+worker; the "
              "floor's process, from /proc)",
              "outside ms: mean latency minus the mean the data plane measured (transport, "
              "server framework, client); the floor's whole mean"]
    for c in dict.fromkeys(row.concurrency for row in table.rows):
        lines += _floor_lines([r for r in table.rows if r.concurrency == c])
    return "\n".join(lines)


def render_protocols_table(reports: list[Report]) -> str:
    parts = [_render_table(table) for table in protocol_tables(reports)]
    return "\n\n".join([*parts, render_direct(reports[0])])


def render_protocols_json(reports: list[Report]) -> str:
    first = reports[0]
    document: dict[str, Any] = {
        "runs": list(map(json_run, reports)),
        "protocols": [asdict(table) for table in protocol_tables(reports)],
        "direct": [asdict(d) for d in first.direct], "direct_error": first.direct_error,
        "errors": sum(r.errors for r in reports)}
    return json.dumps(document, indent=2)
