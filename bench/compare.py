"""Several runs in one invocation (``--mode both``, ``--workers 1,2``): their tables and how they
compare, level by level.

Each candidate run is compared with a baseline run at every concurrency both measured: the req/s
ratio candidate/baseline (rows/s has the same ratio: both send the same request) and the added
p50 latency, candidate - baseline. Embedded vs distributed, that difference is what the queue hop
(facade → RabbitMQ → worker → reply) adds to a request; between worker counts, the ratio is the
scaling. The direct baseline is measured once, after every run, and shown once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bench.report import Report, json_levels, render_direct, render_levels

__all__ = ["Compared", "Comparison", "compare", "comparisons", "render_suite_json",
           "render_suite_table"]


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


def render_suite_table(reports: list[Report], comparisons: list[Comparison]) -> str:
    parts = [f"== {report.config['label']} ==\n{render_levels(report)}" for report in reports]
    parts += [_render_comparison(c) for c in comparisons]
    parts.append(render_direct(reports[0]))
    return "\n\n".join(parts)


def render_suite_json(reports: list[Report], comparisons: list[Comparison]) -> str:
    first = reports[0]
    document: dict[str, Any] = {
        "runs": [{"config": r.config, "levels": json_levels(r), "errors": r.errors}
                 for r in reports],
        "comparisons": [asdict(c) for c in comparisons],
        "direct": [asdict(d) for d in first.direct], "direct_error": first.direct_error,
        "errors": sum(r.errors for r in reports)}
    return json.dumps(document, indent=2)


def comparisons(reports: list[Report], floor_ms: float | None = None) -> list[Comparison]:
    """Each distributed run against the embedded one (the queue hop, with the broker's own
    round trip ``floor_ms`` when measured), and each further worker count against the first
    (the scaling)."""
    embedded = [r for r in reports if r.config["mode"] == "embedded"]
    distributed = [r for r in reports if r.config["mode"] == "distributed"]
    found = [compare(e, d, floor_ms) for e in embedded for d in distributed]
    found += [compare(distributed[0], d) for d in distributed[1:]]
    return found
