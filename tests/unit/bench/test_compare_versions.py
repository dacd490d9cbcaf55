"""``--compare-versions``: what it drives (every version pinned, v1 and the OpenAI API for an
embeddings model), the flags it refuses, the request bytes of a pinned version, and its
side-by-side table with the ratios to the first version, to v1 and to the direct rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import _parser, main, settle
from bench.direct import DirectResult
from bench.payload import BUILDERS, ModelInfo, TensorInfo
from bench.report import LevelRow, Report
from bench.runner import RunPlan, protocols
from bench.versions import pinned_infos
from bench.versions_table import (
    Library,
    render_versions_json,
    render_versions_table,
    version_rows,
)

ROOT = Path(__file__).resolve().parents[3]
LETTERS = str(ROOT / "tests" / "embedding_models")


@pytest.mark.parametrize(("argv", "driven"), [
    (["--model", "minilm"], ("v1", "openai")),
    (["--model", "letters", "--repo", LETTERS], ("v1", "openai")),
    (["--model", "mlp"], ("v1",)),
    (["--model", "minilm", "--protocol", "v2"], ("v2",)),
    (["--model", "minilm", "--protocol", "v2", "--binary"], ("v2-binary",))])
def test_an_embeddings_model_is_driven_through_v1_and_openai_unless_told(
        argv: list[str], driven: tuple[str, ...]) -> None:
    args = _parser().parse_args(["--compare-versions", "--repo", str(ROOT / "models"), *argv])
    assert settle(args) is None
    assert protocols(args, RunPlan("embedded")) == driven
    assert protocols(args, RunPlan("distributed", 2)) == driven


def test_every_version_is_pinned_oldest_first() -> None:
    infos = pinned_infos(str(ROOT / "models"), "minilm")
    assert [(i.version, i.pinned) for i in infos] == [(1, True), (2, True), (3, True)]


@pytest.mark.parametrize(("flags", "named"), [
    (["--url", "http://127.0.0.1:8000"], "--url"), (["--compare"], "--compare"),
    (["--scaling"], "--scaling"), (["--model", "tiny"], "--model tiny (built, one version)")])
def test_refuses_flags_that_make_no_sense_with_it(flags: list[str], named: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare-versions", *flags]) == 2
    assert capsys.readouterr().err == (f"bench: --compare-versions loads every version on the "
                                       f"servers it starts: not with {named}\n")


def test_refuses_a_model_the_repository_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare-versions", "--model", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith("bench: --compare-versions: ")


def test_refuses_it_with_compare_protocols(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare-protocols", "--compare-versions"]) == 2
    assert "not with --compare-versions" in capsys.readouterr().err


MINILM = ModelInfo("minilm", 2, (TensorInfo("text", "string", ("batch",)),), 32)
PINNED = ModelInfo("minilm", 2, MINILM.inputs, 32, pinned=True)


@pytest.mark.parametrize(("protocol", "active", "pinned"), [
    ("v1", "/v1/models/minilm:predict", "/v1/models/minilm/versions/2:predict"),
    ("v1-b64", "/v1/models/minilm:predict", "/v1/models/minilm/versions/2:predict"),
    ("v2", "/v2/models/minilm/infer", "/v2/models/minilm/versions/2/infer"),
    ("v2-binary", "/v2/models/minilm/infer", "/v2/models/minilm/versions/2/infer")])
def test_a_pinned_version_is_named_in_the_path(protocol: str, active: str, pinned: str) -> None:
    assert BUILDERS[protocol](MINILM, 1, 0).path == active
    assert BUILDERS[protocol](PINNED, 1, 0).path == pinned


def test_the_openai_body_names_the_pinned_version_and_sends_text() -> None:
    one = BUILDERS["openai"](PINNED, 1, 0)
    assert one.path == "/openai/v1/embeddings"
    body = json.loads(one.body)
    assert body["model"] == "minilm:2" and isinstance(body["input"], str)
    three = json.loads(BUILDERS["openai"](MINILM, 3, 0).body)
    assert three["model"] == "minilm" and len(three["input"]) == 3
    mlp = ModelInfo("mlp", 1, (TensorInfo("x", "float32", ("batch", 4)),), 64)
    with pytest.raises(ValueError, match="model 'mlp' has no string input"):
        BUILDERS["openai"](mlp, 1, 0)


def _level(concurrency: int, rps: float, p50: float) -> LevelRow:
    return LevelRow(concurrency=concurrency, requests=int(rps), errors=0, window_s=1.0,
                    req_per_s=rps, rows_per_s=rps, p50_ms=p50, p99_ms=2 * p50, mean_ms=p50,
                    max_ms=3 * p50, batches=10, mean_batch=4.0, infer_ms_per_batch=None,
                    client_cpu_pct=5.0, embedded_cpu_ms=2.0)


def _direct(version: int) -> list[DirectResult]:
    """Batch 32 at 100, 150, 200 rows/s for versions 1, 2, 3; batch 1 at a third of that."""
    rate = 50.0 * (version + 1)
    return [DirectResult(1, rate / 3, rate / 3, 1, "cpu"), DirectResult(32, rate / 32, rate, 1,
                                                                         "cpu")]


def _reports() -> list[Report]:
    """Version v serves 100 * v req/s at c=64 through v1, 90 % of that through openai; its
    c=1 p50 is 10 / v ms."""
    reports = []
    for version in (1, 2, 3):
        for protocol, share in (("v1", 1.0), ("openai", 0.9)):
            config = {"label": "embedded", "mode": "embedded", "protocol": protocol,
                      "model": "minilm", "version": version, "pinned": True,
                      "rows_per_request": 1, "duration_s": 5.0, "warmup_s": 1.0, "cpus": 2}
            reports.append(Report(config, [_level(1, 50.0 * share, 10.0 / version),
                                           _level(64, 100.0 * version * share, 200.0)],
                                  _direct(version)))
    return reports


def test_each_row_is_against_the_first_version_v1_and_its_own_direct_rate() -> None:
    rows = {(r.concurrency, r.version, r.protocol): r for r in version_rows(_reports())}
    assert [key[:2] for key in rows] == [(1, 1), (1, 1), (1, 2), (1, 2), (1, 3), (1, 3),
                                         (64, 1), (64, 1), (64, 2), (64, 2), (64, 3), (64, 3)]
    int8 = rows[64, 3, "openai"]
    assert int8.req_per_s_vs_first == pytest.approx(3.0)  # 270 over version 1's openai 90
    assert int8.req_per_s_vs_v1 == pytest.approx(0.9)
    assert int8.direct_batch == 32 and int8.vs_direct == pytest.approx(270 / 200)
    assert rows[1, 2, "v1"].p50_vs_first == pytest.approx(0.5)
    assert rows[1, 1, "v1"].req_per_s_vs_first == 1.0


def test_the_table_lists_the_library_then_each_version_direct() -> None:
    library = Library("sentence-transformers encode", [DirectResult(1, 40, 40, 1, "cpu"),
                                                       DirectResult(32, 4, 128, 1, "cpu")])
    lines = render_versions_table(_reports(), library).splitlines()
    assert lines[0].startswith("== model minilm, every version pinned, 1 row(s)/request")
    [row] = [line for line in lines if line.split()[:3] == ["64", "3", "openai"]]
    assert row.split()[3:] == ["270.0", "200.00", "400.00", "4.00", "2.00", "3.00", "1.00",
                               "0.90", "1.35", "@32", "0"]
    direct = lines[lines.index(next(line for line in lines if line.startswith("direct ("))):]
    assert direct[1].split() == ["batch", "1", "batch", "32"]
    assert direct[2].split() == ["sentence-transformers", "encode", "40", "(1.20x)", "128",
                                 "(1.28x)"]
    assert [line.split()[:2] for line in direct[3:]] == [["version", "1"], ["version", "2"],
                                                         ["version", "3"]]


def test_the_json_document_holds_the_runs_rows_and_every_direct_baseline() -> None:
    document = json.loads(render_versions_json(_reports(), None))
    assert [(run["config"]["version"], run["config"]["protocol"]) for run in document["runs"]
            ] == [(v, p) for v in (1, 2, 3) for p in ("v1", "openai")]
    assert len(document["versions"]) == 12 and sorted(document["direct"]) == ["1", "2", "3"]
    assert document["direct"]["3"][1]["rows_per_s"] == 200.0
    assert document["library"] is None and document["errors"] == 0


def test_minilm_is_also_measured_as_sentence_transformers_encode() -> None:
    from bench.versions import LIBRARIES

    label, rates = LIBRARIES["minilm"]
    results = rates([1, 2], 0.08)
    assert label == "sentence-transformers encode"
    assert [r.batch for r in results] == [1, 2] and all(r.rows_per_s > 0 for r in results)
