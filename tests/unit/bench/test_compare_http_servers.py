"""``--compare-http-servers``: the flags it refuses, its rounds, what starts each server, and its
side-by-side table of uvicorn's and granian's rounds, their means and ratios."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from bench.cli import _parser, main, settle
from bench.cluster import ClusterSpec
from bench.compare import http_server_rows, render_http_servers_json, render_http_servers_table
from bench.report import LevelRow, Report
from bench.server import EmbeddedServer, http_command


def _args(*argv: str) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    assert settle(args) is None
    return args


def test_two_rounds_unless_told() -> None:
    assert _args("--compare-http-servers").rounds == 2
    assert _args("--compare-http-servers", "--rounds", "3", "--mode", "both").rounds == 3


@pytest.mark.parametrize(("flags", "named"), [
    (["--url", "http://127.0.0.1:8000"], "--url"), (["--compare"], "--compare"),
    (["--scaling"], "--scaling"), (["--compare-protocols"], "--compare-protocols"),
    (["--compare-versions"], "--compare-versions"),
    (["--protocol", "grpc"], "--protocol grpc (no HTTP)"), (["--facades", "2"], "--facades"),
    (["--mode", "distributed", "--workers", "1,2"], "several --workers counts"),
    (["--compare", "--scaling"], "--compare, --scaling")])
def test_refuses_flags_that_make_no_sense_with_it(flags: list[str], named: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare-http-servers", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: --compare-http-servers") and f"not with {named}\n" in err


def test_rounds_go_with_it_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rounds", "3"]) == 2
    assert "--rounds goes with --compare-http-servers" in capsys.readouterr().err


def test_without_granian_it_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "granian", None)  # what an import finds without it
    assert main(["--compare-http-servers"]) == 2
    assert "needs granian: pip install -e '.[bench]' (the bench extra)" in capsys.readouterr().err


def test_each_server_runs_the_same_role_from_the_same_environment() -> None:
    uvicorn = EmbeddedServer(port=8123, repo="models", grpc=False)
    granian = EmbeddedServer(port=8123, repo="models", grpc=False, http="granian")
    assert uvicorn.command()[1:] == ["-m", "inferno", "serve"]
    assert granian.command()[1:3] == ["-m", "granian"]
    assert granian.command()[-1] == "bench.granian_app:embedded"
    assert {"--interface", "asgi", "--no-access-log", "uvloop"} <= set(granian.command())
    assert uvicorn.env() == granian.env() == {
        "INFERNO_HOST": "127.0.0.1", "INFERNO_PORT": "8123", "GRANIAN_HOST": "127.0.0.1",
        "GRANIAN_PORT": "8123", "INFERNO_GRPC_PORT": "0", "INFERNO_REPO_ROOT": "models"}
    assert http_command("facade", "granian")[-1] == "bench.granian_app:facade"
    with pytest.raises(ValueError, match="no HTTP server 'hypercorn'"):
        http_command("serve", "hypercorn")


def test_a_granian_facade_is_one_process() -> None:
    with pytest.raises(ValueError, match="facade_processes 1"):
        ClusterSpec("mlp", facade_processes=2, http="granian")


def _level(concurrency: int, rps: float, p50: float, cpu_ms: float) -> LevelRow:
    return LevelRow(concurrency=concurrency, requests=int(rps), errors=0, window_s=1.0,
                    req_per_s=rps, rows_per_s=rps, p50_ms=p50, p99_ms=2 * p50, mean_ms=p50,
                    max_ms=3 * p50, batches=None, mean_batch=None, infer_ms_per_batch=None,
                    client_cpu_pct=20.0, embedded_cpu_ms=cpu_ms)


def _report(server: str, round_: int, *levels: LevelRow, mode: str = "embedded") -> Report:
    config = {"label": f"{mode}, {server}", "mode": mode, "http_server": server,
              "round": round_, "protocol": "v1", "model": "mlp", "version": 2,
              "rows_per_request": 1, "duration_s": 5.0, "warmup_s": 1.0, "cpus": 2,
              "body_bytes": 1000, "loadavg_start": 0.5, "loadavg_end": 0.7}
    return Report(config, list(levels), [])


# Alternated as the bench runs them: uvicorn, granian, uvicorn, granian.
REPORTS = [
    _report("uvicorn", 1, _level(1, 900.0, 1.0, 0.5), _level(64, 2000.0, 30.0, 0.4)),
    _report("granian", 1, _level(1, 1000.0, 0.9, 0.4), _level(64, 2400.0, 26.0, 0.3)),
    _report("uvicorn", 2, _level(1, 1100.0, 1.2, 0.5), _level(64, 2000.0, 34.0, 0.4)),
    _report("granian", 2, _level(1, 1200.0, 1.0, 0.4), _level(64, 2600.0, 28.0, 0.3))]


def test_rows_give_each_round_then_the_mean_over_uvicorns_mean() -> None:
    rows = http_server_rows(REPORTS)
    assert [(r.concurrency, r.server, r.round) for r in rows] == [
        (c, server, round_) for c in (1, 64) for server in ("uvicorn", "granian")
        for round_ in (1, 2, None)]
    uvicorn_mean, granian_mean = rows[2], rows[5]
    assert (uvicorn_mean.req_per_s, uvicorn_mean.p50_ms) == (1000.0, pytest.approx(1.1))
    assert uvicorn_mean.req_per_s_vs_uvicorn == uvicorn_mean.p50_vs_uvicorn == 1.0
    assert granian_mean.req_per_s == 1100.0 and granian_mean.req_per_s_vs_uvicorn == 1.1
    assert granian_mean.p50_vs_uvicorn == pytest.approx(0.95 / 1.1)
    assert granian_mean.cpu_ms_per_req == pytest.approx(0.4)
    assert rows[0].req_per_s_vs_uvicorn == 0.9  # one round, over the mean of uvicorn's
    granian_64 = rows[-1]
    assert granian_64.req_per_s_vs_uvicorn == 1.25 and granian_64.p50_ms == 27.0


def test_each_mode_gets_its_own_baseline() -> None:
    distributed = [_report("uvicorn", 1, _level(1, 400.0, 2.0, 0.7), mode="distributed"),
                   _report("granian", 1, _level(1, 200.0, 4.0, 1.1), mode="distributed")]
    rows = http_server_rows([*REPORTS, *distributed])
    last = rows[-1]
    assert (last.mode, last.server, last.round) == ("distributed", "granian", None)
    assert (last.req_per_s_vs_uvicorn, last.p50_vs_uvicorn) == (0.5, 2.0)


def test_table_and_json() -> None:
    table = render_http_servers_table(REPORTS)
    assert table.startswith("== embedded: uvicorn vs granian, model mlp v2, v1 body 1000 B")
    assert "2 round(s) of 5 s" in table
    lines = table.splitlines()
    assert lines[1].startswith("2 CPUs, 1-min load average 0.5 at start, 0.7 at end")
    header = lines[2].split()
    assert header[:3] == ["concurrency", "server", "round"] and header[-1] == "errors"
    granian_mean_at_1 = lines[8].split()
    assert granian_mean_at_1[:4] == ["1", "granian", "mean", "1100.0"]
    assert granian_mean_at_1[-3:] == ["1.10", "0.86", "0"]
    document = json.loads(render_http_servers_json(REPORTS))
    assert len(document["runs"]) == 4 and document["errors"] == 0
    assert document["http_servers"][5]["req_per_s_vs_uvicorn"] == 1.1
