"""``--compare-protocols``: which runs and protocols it plans, the flags it refuses, and its
side-by-side table with the gRPC-off run's row, the time outside the data plane, and the bare
gRPC floor's rows and lines."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.cli import _parser, main, settle
from bench.payload import COMPARED, GRPC_PROTOCOLS
from bench.protocol_table import protocol_tables, render_protocols_json, render_protocols_table
from bench.report import LevelRow, Report
from bench.runner import plans, protocols

FLOOR = "grpc floor (bare grpc.aio echo)"


def _args(*argv: str) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    assert settle(args) is None
    return args


def test_plans_each_server_then_it_with_grpc_off_then_the_floor() -> None:
    args = _args("--compare-protocols", "--mode", "both")
    runs = plans(args)
    assert [(plan.mode, plan.grpc) for plan in runs] == [
        ("embedded", True), ("embedded", False), ("distributed", True), ("distributed", False),
        ("floor", True)]
    assert [protocols(args, plan) for plan in runs] == [
        COMPARED, ("v2-binary",), COMPARED, ("v2-binary",), GRPC_PROTOCOLS]
    assert runs[0].label == runs[1].label == "embedded" and runs[2].label == runs[3].label
    assert runs[-1].label == FLOOR
    assert [(plan.mode, plan.grpc) for plan in plans(_args("--compare-protocols", "--no-floor"))
            ] == [("embedded", True), ("embedded", False)]
    plain = _args("--protocol", "v2", "--mode", "both")
    assert [(plan.mode, plan.grpc, protocols(plain, plan)) for plan in plans(plain)] == [
        ("embedded", True, ("v2",)), ("distributed", True, ("v2",))]


@pytest.mark.parametrize(("flags", "named"), [
    (["--url", "http://127.0.0.1:8000"], "--url"), (["--driver", "wrk"], "--driver wrk"),
    (["--compare"], "--compare"), (["--scaling"], "--scaling"),
    (["--protocol", "v1"], "--protocol"), (["--binary"], "--binary"),
    (["--protocol", "grpc", "--url", "http://x"], "--url, --protocol")])
def test_refuses_flags_that_make_no_sense_with_it(flags: list[str], named: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare-protocols", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: --compare-protocols") and f"not with {named}\n" in err


def test_grpc_stream_refuses_a_server_it_does_not_start(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--protocol", "grpc-stream", "--url", "http://127.0.0.1:8000"]) == 2
    assert "--protocol grpc-stream drives the servers the bench starts" in capsys.readouterr().err


def _level(concurrency: int, rps: float, p50: float, **extra: float) -> LevelRow:
    """A level whose mean is its p50."""
    return LevelRow(concurrency=concurrency, requests=int(rps), errors=0, window_s=1.0,
                    req_per_s=rps, rows_per_s=rps, p50_ms=p50, p99_ms=2 * p50, mean_ms=p50,
                    max_ms=3 * p50, batches=None, mean_batch=None, infer_ms_per_batch=None,
                    client_cpu_pct=20.0, **extra)


def _report(mode: str, label: str, protocol: str, *levels: LevelRow, grpc: bool = True
            ) -> Report:
    config = {"label": label, "mode": mode, "protocol": protocol, "model": "mlp", "version": 2,
              "rows_per_request": 1, "duration_s": 5.0, "warmup_s": 1.0, "cpus": 2,
              "loadavg_start": 0.5, "loadavg_end": 0.7, "body_bytes": 1000}
    if not grpc:
        config["grpc"] = False
    return Report(config, list(levels), [], "--no-direct")


GRPC_OFF = "v2-binary, gRPC off"
STREAM_FLOOR = "grpc-stream floor (bare grpc.aio echo)"


def _grpc_off() -> Report:
    """v2-binary against the embedded server with gRPC off: 0.96x and 0.98x the req/s, 1.10x
    the p50."""
    return _report("embedded", "embedded", "v2-binary", _level(1, 1200, 1.1, server_ms=0.65),
                   _level(16, 4900, 3.3, embedded_cpu_ms=0.2), grpc=False)


def _reports() -> list[Report]:
    """Embedded (the data plane takes 0.6 ms of each c=1 request), its run with gRPC off, the
    floor."""
    rps = {"v1": 4000, "v2": 4200, "v2-binary": 5000, "grpc": 2500, "grpc-stream": 4000}
    inferno = [_report("embedded", "embedded", p,
                       _level(1, rps[p] / 4, 1.0 + (p == "grpc"), server_ms=0.6),
                       _level(16, rps[p], 3.0, embedded_cpu_ms=0.2))
               for p in COMPARED]
    floor = [_report("floor", FLOOR, p, _level(1, 2500 if p == "grpc" else 5000,
                                               0.4 if p == "grpc" else 0.2, process_cpu_ms=0.3),
                     _level(16, 3000 if p == "grpc" else 6000, 2.0, process_cpu_ms=0.25))
             for p in GRPC_PROTOCOLS]
    return [*inferno, _grpc_off(), *floor]


def test_each_level_lists_every_protocol_grpc_off_then_the_floor_against_v2_binary() -> None:
    [table] = protocol_tables(_reports())
    assert table.label == "embedded"
    assert [(r.concurrency, r.protocol) for r in table.rows[:8]] == [
        (1, "v1"), (1, "v2"), (1, "v2-binary"), (1, "grpc"), (1, "grpc-stream"),
        (1, GRPC_OFF), (1, FLOOR), (1, STREAM_FLOOR)]
    at16 = {r.protocol: r for r in table.rows if r.concurrency == 16}
    assert at16["v2-binary"].req_per_s_vs_baseline == 1.0
    assert at16["grpc"].req_per_s_vs_baseline == 0.5
    assert at16[FLOOR].req_per_s_vs_baseline == 0.6 and at16[FLOOR].floor
    assert at16[FLOOR].server_cpu == "0.25" and at16["v1"].server_cpu == "0.20"
    at1 = {r.protocol: r for r in table.rows if r.concurrency == 1}
    assert at1["grpc"].p50_vs_baseline == 2.0 and at1[FLOOR].p50_vs_baseline == 0.4


def test_the_grpc_off_row_is_against_v2_binary_with_grpc_on_whatever_the_order() -> None:
    reports = _reports()
    for order in (reports, [reports[5], *reports[:5], *reports[6:]]):
        [table] = protocol_tables(order)
        at16 = {r.protocol: r for r in table.rows if r.concurrency == 16}
        assert at16["v2-binary"].req_per_s_vs_baseline == 1.0
        assert at16[GRPC_OFF].req_per_s_vs_baseline == 0.98
        assert at16[GRPC_OFF].p50_vs_baseline == pytest.approx(1.1)
        assert not at16[GRPC_OFF].floor


def test_outside_ms_is_the_mean_less_the_data_planes_and_the_floors_whole_mean() -> None:
    [table] = protocol_tables(_reports())
    at1 = {r.protocol: r.outside_ms for r in table.rows if r.concurrency == 1}
    assert at1["v2-binary"] == pytest.approx(0.4) and at1["grpc"] == pytest.approx(1.4)
    assert at1[GRPC_OFF] == pytest.approx(0.45)
    assert at1[FLOOR] == 0.4 and at1[STREAM_FLOOR] == 0.2  # no data plane: the whole mean
    # A level whose metrics gave no data-plane mean has no time outside it either.
    assert {r.outside_ms for r in table.rows if r.concurrency == 16 and not r.floor} == {None}


def test_the_table_ends_each_level_with_what_the_floor_reached_and_the_latency_argument(
        ) -> None:
    text = render_protocols_table(_reports())
    lines = text.splitlines()
    assert lines[0].startswith("== embedded: model mlp v2, 1 row(s)/request")
    assert "request bodies: v1 1000 B, v2 1000 B, v2-binary 1000 B, grpc 1000 B" in lines[1]
    assert lines[1].count("v2-binary") == 1  # the gRPC-off run sends the same body
    assert "outside ms" in lines[3]
    [row] = [line for line in lines if line.startswith(f"          1  {GRPC_OFF} ")]
    assert row.split()[5:10] == ["1.10", "2.20", "0.45", "0.96", "1.10"]
    [line16] = [line for line in lines if line.startswith("c=16: grpcio alone")]
    assert "v2-binary's 5000 req/s" in line16
    assert "unary 3000 req/s = 0.60x" in line16 and "stream 6000 req/s = 1.20x" in line16
    assert "0.250 ms server CPU per call" in line16
    [line1] = [line for line in lines if line.startswith("c=1: the data plane is the same")]
    assert "at most v2-binary's 0.40 ms (mean; Inferno's grpc 1.40, grpc-stream 0.40)" in line1
    assert line1.endswith("the bare echo's whole round trip: unary 0.40, stream 0.20 ms")
    assert lines[-1] == "direct baseline skipped: --no-direct"


def test_the_json_document_holds_every_run_and_the_tables() -> None:
    document = json.loads(render_protocols_json(_reports()))
    assert [run["config"]["protocol"] for run in document["runs"]] == [
        *COMPARED, "v2-binary", *GRPC_PROTOCOLS]
    assert document["runs"][5]["config"]["grpc"] is False
    [table] = document["protocols"]
    assert len(table["rows"]) == 16 and table["rows"][6]["floor"] is True
    off = table["rows"][5]
    assert off["protocol"] == GRPC_OFF and off["req_per_s_vs_baseline"] == 0.96
    assert off["outside_ms"] == pytest.approx(0.45)
    assert document["errors"] == 0 and document["direct_error"] == "--no-direct"


def test_a_distributed_run_gets_its_own_table_with_the_same_floor() -> None:
    reports = _reports()
    distributed = [_report("distributed", "distributed, 1 facade, 1 worker", p,
                           _level(16, 1000.0, 8.0, facade_cpu_ms=0.3, worker_cpu_ms=0.4))
                   for p in COMPARED]
    tables = protocol_tables(reports[:6] + distributed + reports[6:])
    assert [t.label for t in tables] == ["embedded", "distributed, 1 facade, 1 worker"]
    rows = {r.protocol: r for r in tables[1].rows}
    assert rows["grpc"].server_cpu == "0.30+0.40" and rows[FLOOR].req_per_s_vs_baseline == 3.0
