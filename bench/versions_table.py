"""``--compare-versions``: every version of a model and every protocol driven, side by side.

One table per run (embedded, each distributed cluster). At each concurrency, a row per version
and protocol: req/s, p50, p99, mean batch, the servers' CPU per request, then three ratios:
req/s and p50 over the first version's (the same protocol and level: for minilm, ONNX over
PyTorch), req/s over v1's (the same version and level: what the protocol costs), and rows/s over
the version's own direct rate at the largest direct batch (``bench.versions.BATCHES``: near or
above 1, batching across requests reaches what one process batching by hand gets). Under them,
the direct baselines: the library call (``bench.versions.LIBRARIES``) and each version, rows/s
at each batch size and over the first version's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bench.compare import ratio
from bench.direct import DirectResult
from bench.report import Report, fmt, json_run

__all__ = ["Library", "VersionRow", "render_versions_json", "render_versions_table",
           "version_rows"]


@dataclass(frozen=True, slots=True)
class Library:
    """The library call's direct baseline (``bench.versions.LIBRARIES``)."""

    label: str
    direct: list[DirectResult]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class VersionRow:
    label: str
    """The run: ``embedded`` or a distributed cluster's label."""
    concurrency: int
    version: int
    protocol: str
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    mean_batch: float | None
    server_cpu: str
    """CPU ms per request, per server role (``LevelRow.server_cpu``)."""
    req_per_s_vs_first: float | None
    """req/s over the first version's, same protocol and level."""
    p50_vs_first: float | None
    req_per_s_vs_v1: float | None
    """req/s over the v1 protocol's, same version and level."""
    direct_batch: int | None
    """The batch of the direct rate compared with (the largest measured)."""
    vs_direct: float | None
    """rows/s over the version's direct rows/s at ``direct_batch``."""
    errors: int


def _largest(direct: list[DirectResult]) -> DirectResult | None:
    return max(direct, key=lambda d: d.batch, default=None)


def version_rows(reports: list[Report]) -> list[VersionRow]:
    """Every level of every report, grouped by run and concurrency, in version then protocol
    order."""
    by_key = {(r.config["label"], r.config["version"], r.config["protocol"],
               lvl.concurrency): lvl for r in reports for lvl in r.levels}
    first = min(r.config["version"] for r in reports)
    rows = []
    labels = dict.fromkeys(r.config["label"] for r in reports)
    for label in labels:
        runs = [r for r in reports if r.config["label"] == label]
        for c in dict.fromkeys(lvl.concurrency for r in runs for lvl in r.levels):
            for report in runs:
                version, protocol = report.config["version"], report.config["protocol"]
                level = by_key.get((label, version, protocol, c))
                if level is None:
                    continue
                base = by_key.get((label, first, protocol, c))
                v1 = by_key.get((label, version, "v1", c))
                direct = _largest(report.direct)
                rows.append(VersionRow(
                    label=label, concurrency=c, version=version, protocol=protocol,
                    req_per_s=level.req_per_s, p50_ms=level.p50_ms, p99_ms=level.p99_ms,
                    mean_batch=level.mean_batch, server_cpu=level.server_cpu,
                    req_per_s_vs_first=ratio(level.req_per_s, base.req_per_s if base else None),
                    p50_vs_first=ratio(level.p50_ms, base.p50_ms if base else None),
                    req_per_s_vs_v1=ratio(level.req_per_s, v1.req_per_s if v1 else None),
                    direct_batch=direct.batch if direct else None,
                    vs_direct=ratio(level.rows_per_s, direct.rows_per_s if direct else None),
                    errors=level.errors))
    return rows


_COLUMNS = (("concurrency", 11), ("version", 7), ("protocol", 8), ("req/s", 9), ("p50 ms", 8),
            ("p99 ms", 8), ("mean batch", 10), ("cpu ms/req", 10), ("req/s vs first", 14),
            ("p50 vs first", 12), ("req/s vs v1", 11), ("vs direct", 14), ("errors", 6))


def _cells(row: VersionRow) -> dict[str, str]:
    return {"concurrency": str(row.concurrency), "version": str(row.version),
            "protocol": row.protocol, "req/s": f"{row.req_per_s:.1f}",
            "p50 ms": fmt(row.p50_ms, 2), "p99 ms": fmt(row.p99_ms, 2),
            "mean batch": fmt(row.mean_batch, 2), "cpu ms/req": row.server_cpu,
            "req/s vs first": fmt(row.req_per_s_vs_first, 2),
            "p50 vs first": fmt(row.p50_vs_first, 2), "req/s vs v1": fmt(row.req_per_s_vs_v1, 2),
            "vs direct": (f"{fmt(row.vs_direct, 2)} @{row.direct_batch}"
                          if row.direct_batch else "-"),
            "errors": str(row.errors)}


def _line(cells: dict[str, str]) -> str:
    return "  ".join(cells[name].ljust(width) if name == "protocol" else cells[name].rjust(width)
                     for name, width in _COLUMNS)


def _direct_lines(reports: list[Report], library: Library | None) -> list[str]:
    directs = {r.config["version"]: r for r in reports}
    named: list[tuple[str, list[DirectResult]]] = []
    if library is not None:
        named.append((library.label, library.direct))
    named += [(f"version {v}", directs[v].direct) for v in sorted(directs)]
    first = directs[min(directs)].direct
    batches = sorted({d.batch for _, direct in named for d in direct})
    if not batches:
        why = next((r.direct_error for r in reports if r.direct_error), "not requested")
        return [f"direct baseline skipped: {why}"]
    some = next(d for _, direct in named for d in direct)
    lines = [f"direct (called in the bench process, {some.device}, {some.threads} thread(s)): "
             f"rows/s (x the first version's)",
             f"{'':<30}" + "".join(f"{f'batch {b}':>20}" for b in batches)]
    for name, direct in named:
        at = {d.batch: d for d in direct}
        base = {d.batch: d.rows_per_s for d in first}
        lines.append(f"{name:<30}" + "".join(
            f"{at[b].rows_per_s:>12.0f} ({fmt(ratio(at[b].rows_per_s, base.get(b)), 2)}x)"
            if b in at else f"{'-':>20}" for b in batches))
    if library is not None and library.error:
        lines.append(f"{library.label}: {library.error}")
    return lines


def render_versions_table(reports: list[Report], library: Library | None) -> str:
    c = reports[0].config
    lines = [f"== model {c['model']}, every version pinned, {c['rows_per_request']} row(s)/"
             f"request, {c['duration_s']:g} s window after {c['warmup_s']:g} s warm-up, "
             f"{c['cpus']} CPUs ==",
             "  ".join(name.ljust(width) if name == "protocol" else name.rjust(width)
                       for name, width in _COLUMNS)]
    label = None
    for row in version_rows(reports):
        if row.label != label:
            label = row.label
            lines.append(f"-- {label} --")
        lines.append(_line(_cells(row)))
    lines += ["vs first: over the first version's, same protocol and level; vs v1: over the "
              "v1 protocol's, same version and level; vs direct: rows/s over the version's "
              "direct rows/s at that batch", "", *_direct_lines(reports, library)]
    return "\n".join(lines)


def render_versions_json(reports: list[Report], library: Library | None) -> str:
    directs = {r.config["version"]: r for r in reports}
    document: dict[str, Any] = {
        "runs": list(map(json_run, reports)),
        "versions": [asdict(row) for row in version_rows(reports)],
        "direct": {str(v): [asdict(d) for d in directs[v].direct] for v in sorted(directs)},
        "library": asdict(library) if library else None,
        "errors": sum(r.errors for r in reports)}
    return json.dumps(document, indent=2)
