"""`python -m bench` stays runnable: a short run against `inferno serve`, no speed asserts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_end_to_end_without_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--concurrency", "2", "--duration", "1",
         "--warmup", "0.2", "--direct-duration", "0.2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    level = json.loads(result.stdout)["levels"][0]
    assert level["concurrency"] == 2 and level["errors"] == 0
    assert level["requests"] > 0 and level["p50_ms"] > 0 and level["mean_batch"] >= 1
    # The server's own CPU, from its process_cpu_seconds_total: one embedded process.
    assert level["embedded_cpu_ms"] > 0 and level["facade_cpu_ms"] is None
    assert level["broker_cpu_ms"] is None and level["redis_cpu_ms"] is None  # none in use
    # The whole machine's busy share in the window (/proc/stat): the server at least ran.
    assert 0 < level["machine_busy_pct"] <= 100


def test_bench_distributed_mode_runs_end_to_end(broker_root_url: str, redis_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the distributed bench creates its vhost with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--mode", "distributed", "--workers", "1",
         "--concurrency", "2", "--duration", "1", "--warmup", "0.2", "--direct-duration", "0.2",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["config"]["mode"] == "distributed" and report["config"]["workers"] == 1
    level = report["levels"][0]
    assert level["errors"] == 0 and level["requests"] > 0 and level["mean_batch"] >= 1
    assert level["facade_cpu_ms"] > 0 and level["worker_cpu_ms"] > 0  # each role's own CPU
    assert level["embedded_cpu_ms"] is None
    # The local broker's and Redis's CPU, from /proc by the pid listening on their URLs' ports.
    # Redis is off the request path (heartbeats only) and /proc counts 10 ms ticks: in a 1 s
    # window it often spends none, so its figure is only known, while the broker's is > 0.
    assert level["broker_cpu_ms"] > 0
    assert level["redis_cpu_ms"] is not None and level["redis_cpu_ms"] >= 0


def test_bench_scaling_runs_each_worker_count(broker_root_url: str, redis_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the distributed bench creates its vhost with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--scaling", "--workers", "1,2", "--concurrency", "8",
         "--duration", "1", "--warmup", "0.2", "--no-direct", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [run["config"]["model"] for run in document["runs"]] == ["fixed", "fixed"]
    rows = document["scaling"]
    assert [(row["workers"], row["ideal"]) for row in rows] == [(1, 1.0), (2, 2.0)]
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0
    assert all(row["model_busy_pct_per_worker"] > 0 for row in rows)


def test_bench_both_modes_split_the_queue_hop_with_the_broker_floor(broker_root_url: str,
                                                                    redis_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the distributed bench creates its vhost with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--mode", "both", "--concurrency", "1", "--duration",
         "1", "--warmup", "0.2", "--no-direct", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    [hop] = json.loads(result.stdout)["comparisons"]
    assert hop["queue_hop"] and hop["floor_ms"] > 0
    assert hop["levels"][0]["concurrency"] == 1 and hop["levels"][0]["p50_added_ms"] is not None


def test_rpc_floor_measures_both_reply_modes() -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the floor's vhost is made with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench.rpc_floor", "--requests", "60", "--reply", "both"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line.split(", c=1")[0] for line in lines] == [
        "bare aio-pika RPC, reply to exclusive", "bare aio-pika RPC, reply to direct"]
    assert "Unhandled message" not in result.stderr  # no reply came back as unroutable


@pytest.mark.parametrize("model", ["mlp", "tiny"])
def test_bench_compare_runs_every_server_without_errors(model: str, broker_root_url: str,
                                                        redis_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the distributed bench creates its vhost with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--compare", "--model", model, "--concurrency", "1",
         "--duration", "1", "--warmup", "0.2", "--direct-duration", "0.2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [run["config"]["mode"] for run in document["runs"]] == [
        "plain", "embedded", "distributed"]
    for run in document["runs"]:
        assert run["config"]["model"] == model
        [level] = run["levels"]
        assert level["concurrency"] == 1 and level["errors"] == 0 and level["requests"] > 0
    rows = document["side_by_side"]["rows"]
    assert [row["server"] for row in rows] == [run["config"]["label"] for run in document["runs"]]
    # A run that left cores idle could do more: its ceiling is above what it measured.
    assert all(row["ceiling_vs_embedded"] >= row["req_per_s_vs_embedded"] for row in rows)
    single = document["side_by_side"]["c1"]
    assert single["embedded_over_plain_p50"] is not None
    assert single["floor_ms"] is not None and single["distributed_minus_floor_ms"] is not None
    assert single["model_ms"] > 0  # the direct batch-1 call, part of distributed c=1's floor
    assert {d["batch"] for d in document["direct"]} >= {1, 64}
    assert document["errors"] == 0


def test_bench_compare_http_servers_alternates_uvicorn_and_granian_without_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--compare-http-servers", "--model", "tiny",
         "--concurrency", "1", "--duration", "0.3", "--warmup", "0.1", "--no-direct", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [(run["config"]["http_server"], run["config"]["round"])
            for run in document["runs"]] == [("uvicorn", 1), ("granian", 1), ("uvicorn", 2),
                                             ("granian", 2)]
    for run in document["runs"]:
        [level] = run["levels"]
        assert level["errors"] == 0 and level["requests"] > 0
        assert level["embedded_cpu_ms"] > 0  # the /metrics of the process that served them
    means = [row for row in document["http_servers"] if row["round"] is None]
    assert [row["server"] for row in means] == ["uvicorn", "granian"]
    assert means[0]["req_per_s_vs_uvicorn"] == 1.0 and means[1]["req_per_s_vs_uvicorn"] > 0
    assert document["errors"] == 0


def test_bench_compare_protocols_runs_each_protocol_grpc_off_then_the_grpc_floor() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--compare-protocols", "--concurrency", "1",
         "--duration", "0.3", "--warmup", "0.1", "--no-direct", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    runs = [(run["config"]["mode"], run["config"]["protocol"]) for run in document["runs"]]
    assert runs == [("embedded", p) for p in ("v1", "v2", "v2-binary", "grpc", "grpc-stream")] + [
        ("embedded", "v2-binary"), ("floor", "grpc"), ("floor", "grpc-stream")]
    assert len({run["config"]["url"] for run in document["runs"][:3]}) == 1  # one server
    off = document["runs"][5]["config"]
    assert off["grpc"] is False and off["server"] == "embedded server, gRPC off"
    assert off["url"] != document["runs"][0]["config"]["url"]  # a fresh server
    [table] = document["protocols"]
    assert table["label"] == "embedded" and len(table["rows"]) == 8
    for row in table["rows"]:
        assert row["errors"] == 0 and row["req_per_s"] > 0 and row["p50_ms"] > 0
        # The server's own CPU: from its metrics, or the floor process's from /proc.
        assert row["server_cpu_ms"] > 0
        assert (row["mean_batch"] is None) == row["floor"]
        # The client's mean exceeds the data plane's: a loopback round trip is never free.
        assert row["outside_ms"] > 0
    assert [row["protocol"] for row in table["rows"] if row["floor"]] == [
        "grpc floor (bare grpc.aio echo)", "grpc-stream floor (bare grpc.aio echo)"]
    baseline = next(row for row in table["rows"] if row["protocol"] == "v2-binary")
    assert baseline["req_per_s_vs_baseline"] == 1.0
    grpc_off = next(row for row in table["rows"] if row["protocol"] == "v2-binary, gRPC off")
    assert grpc_off["req_per_s_vs_baseline"] > 0 and grpc_off["p50_vs_baseline"] > 0
    assert document["errors"] == 0


def test_bench_compare_versions_drives_an_embeddings_model_through_v1_and_openai() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--compare-versions", "--repo",
         str(ROOT / "tests" / "embedding_models"), "--model", "letters", "--concurrency", "2",
         "--duration", "0.5", "--warmup", "0.1", "--direct-duration", "0.2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [(run["config"]["version"], run["config"]["protocol"], run["config"]["pinned"])
            for run in document["runs"]] == [(1, "v1", True), (1, "openai", True)]
    assert document["versions"][0]["req_per_s_vs_v1"] == 1.0
    for row in document["versions"]:
        assert row["errors"] == 0 and row["req_per_s"] > 0 and row["mean_batch"] >= 1
    # letters batches at most 4 rows: its direct baseline stops there.
    assert max(d["batch"] for d in document["direct"]["1"]) <= 4
    assert document["library"] is None and document["errors"] == 0


def test_bench_compare_versions_loads_every_version_on_a_cluster(broker_root_url: str,
                                                                  redis_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("the distributed bench creates its vhost with rabbitmqctl")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--compare-versions", "--mode", "distributed",
         "--model", "mlp", "--concurrency", "2", "--duration", "0.5", "--warmup", "0.1",
         "--no-direct", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert [(run["config"]["version"], run["config"]["protocol"]) for run in document["runs"]
            ] == [(1, "v1"), (2, "v1")]
    for row in document["versions"]:
        assert row["errors"] == 0 and row["req_per_s"] > 0
    assert document["errors"] == 0
