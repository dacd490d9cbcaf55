"""``--compare-protocols``: which runs and protocols it plans, the flags it refuses, and its
side-by-side table with the bare gRPC floor's rows and lines."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.cli import _parser, main
from bench.payload import COMPARED, GRPC_PROTOCOLS
from bench.protocol_table import protocol_tables, render_protocols_json, render_protocols_table
from bench.report import LevelRow, Report
from bench.runner import plans, protocols

FLOOR = "grpc floor (bare grpc.aio echo)"


def _args(*argv: str) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    args.workers = [1]
    return args


def test_plans_one_server_per_mode_then_the_floor() -> None:
    args = _args("--compare-protocols", "--mode", "both")
    runs = plans(args)
    assert [plan.mode for plan in runs] == ["embedded", "distributed", "floor"]
    assert [protocols(args, plan) for plan in runs] == [COMPARED, COMPARED, GRPC_PROTOCOLS]
    assert runs[-1].label == FLOOR
    assert [plan.mode for plan in plans(_args("--compare-protocols", "--no-floor"))] == [
        "embedded"]
    plain = _args("--protocol", "v2")
    assert [protocols(plain, plan) for plan in plans(plain)] == [("v2",)]


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


def _level(concurrency: int, rps: float, p50: float, **cpu: float) -> LevelRow:
    return LevelRow(concurrency=concurrency, requests=int(rps), errors=0, window_s=1.0,
                    req_per_s=rps, rows_per_s=rps, p50_ms=p50, p99_ms=2 * p50, mean_ms=p50,
                    max_ms=3 * p50, batches=None, mean_batch=None, infer_ms_per_batch=None,
                    client_cpu_pct=20.0, **cpu)


def _report(mode: str, label: str, protocol: str, *levels: LevelRow) -> Report:
    config = {"label": label, "mode": mode, "protocol": protocol, "model": "mlp", "version": 2,
              "rows_per_request": 1, "duration_s": 5.0, "warmup_s": 1.0, "cpus": 2,
              "loadavg_start": 0.5, "loadavg_end": 0.7, "body_bytes": 1000}
    return Report(config, list(levels), [], "--no-direct")


def _reports() -> list[Report]:
    rps = {"v1": 4000, "v2": 4200, "v2-binary": 5000, "grpc": 2500, "grpc-stream": 4000}
    inferno = [_report("embedded", "embedded", p, _level(1, rps[p] / 4, 1.0 + (p == "grpc")),
                       _level(16, rps[p], 3.0, embedded_cpu_ms=0.2))
               for p in COMPARED]
    floor = [_report("floor", FLOOR, p, _level(1, 2500 if p == "grpc" else 5000, 0.4,
                                               process_cpu_ms=0.3),
                     _level(16, 3000 if p == "grpc" else 6000, 2.0, process_cpu_ms=0.25))
             for p in GRPC_PROTOCOLS]
    return inferno + floor


def test_each_level_lists_every_protocol_then_the_floor_against_v2_binary() -> None:
    [table] = protocol_tables(_reports())
    assert table.label == "embedded"
    assert [(r.concurrency, r.protocol) for r in table.rows[:7]] == [
        (1, "v1"), (1, "v2"), (1, "v2-binary"), (1, "grpc"), (1, "grpc-stream"),
        (1, FLOOR), (1, "grpc-stream floor (bare grpc.aio echo)")]
    at16 = {r.protocol: r for r in table.rows if r.concurrency == 16}
    assert at16["v2-binary"].req_per_s_vs_baseline == 1.0
    assert at16["grpc"].req_per_s_vs_baseline == 0.5
    assert at16[FLOOR].req_per_s_vs_baseline == 0.6 and at16[FLOOR].floor
    assert at16[FLOOR].server_cpu == "0.25" and at16["v1"].server_cpu == "0.20"
    at1 = {r.protocol: r for r in table.rows if r.concurrency == 1}
    assert at1["grpc"].p50_vs_baseline == 2.0 and at1[FLOOR].p50_vs_baseline == 0.4


def test_the_table_ends_each_level_with_what_the_floor_reached() -> None:
    text = render_protocols_table(_reports())
    lines = text.splitlines()
    assert lines[0].startswith("== embedded: model mlp v2, 1 row(s)/request")
    assert "request bodies: v1 1000 B, v2 1000 B, v2-binary 1000 B, grpc 1000 B" in lines[1]
    [line16] = [line for line in lines if line.startswith("c=16: grpcio alone")]
    assert "v2-binary's 5000 req/s" in line16
    assert "unary 3000 req/s = 0.60x" in line16 and "stream 6000 req/s = 1.20x" in line16
    assert "0.250 ms server CPU per call" in line16
    assert lines[-1] == "direct baseline skipped: --no-direct"


def test_the_json_document_holds_every_run_and_the_tables() -> None:
    document = json.loads(render_protocols_json(_reports()))
    assert [run["config"]["protocol"] for run in document["runs"]] == [*COMPARED,
                                                                       *GRPC_PROTOCOLS]
    [table] = document["protocols"]
    assert len(table["rows"]) == 14 and table["rows"][5]["floor"] is True
    assert document["errors"] == 0 and document["direct_error"] == "--no-direct"


def test_a_distributed_run_gets_its_own_table_with_the_same_floor() -> None:
    reports = _reports()
    distributed = [_report("distributed", "distributed, 1 facade, 1 worker", p,
                           _level(16, 1000.0, 8.0, facade_cpu_ms=0.3, worker_cpu_ms=0.4))
                   for p in COMPARED]
    tables = protocol_tables(reports[:5] + distributed + reports[5:])
    assert [t.label for t in tables] == ["embedded", "distributed, 1 facade, 1 worker"]
    rows = {r.protocol: r for r in tables[1].rows}
    assert rows["grpc"].server_cpu == "0.30+0.40" and rows[FLOOR].req_per_s_vs_baseline == 3.0
