"""The monitoring files: deploy/prometheus/alerts.yml (+ its promtool tests) and the Grafana
dashboard deploy/grafana/inferno.json.

promtool checks the rules and runs their unit tests (deploy/prometheus/alerts_test.yml: every
alert fires on its series and stays silent on others); every metric either file queries must be
one the code exports, so a renamed metric breaks this test rather than a dashboard in production.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from common.heap import GcPauses
from common.metrics import FacadeMetrics, WorkerMetrics, process_registry, supervisor_for
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "inferno.json"

METRIC = re.compile(r"\b((?:infer|inferno|model|process)_[A-Za-z0-9_]+)\b(?!\s*\()")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count")}


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exported_samples() -> set[str]:
    """Every sample name a facade, a worker or any process exposes: the families' ``# TYPE``
    lines of ``generate_latest`` expanded by type (a family with labels and no child yet has no
    sample line, but its TYPE line is there)."""
    registry = process_registry()
    FacadeMetrics(registry)
    WorkerMetrics(registry)
    supervisor_for(registry)
    GcPauses(registry)
    names: set[str] = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
            if kind in ("counter", "histogram", "summary"):
                names.add(family.removesuffix("_total") + "_created")
    return names


def metrics_in(expression: str) -> set[str]:
    """Metric names a PromQL expression selects (label values and strings left out)."""
    return set(METRIC.findall(STRING.sub('""', expression)))


def dashboard_expressions() -> list[str]:
    found = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    found += [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    return found


# --- promtool -----------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    promtool = require_tool("promtool")
    run = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in run.stdout


def test_compose_prometheus_loads_the_rules(tmp_path: Path) -> None:
    # The files laid out as docker-compose.yml mounts them: the configuration finds the rules.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for mount in compose["services"]["prometheus"]["volumes"]:
        source, target = mount.split(":")[:2]
        (tmp_path / Path(target).name).write_bytes((ROOT / source).read_bytes())
    promtool = require_tool("promtool")
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules())} rules found" in run.stdout


def test_alert_rules_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    run = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_fails_an_alert_that_does_not_fire_as_tested(tmp_path: Path) -> None:
    # The check above can fail: the same tests against rules with one threshold raised.
    promtool = require_tool("promtool")
    text = ALERTS.read_text()
    raised = text.replace("max(inferno_dead_letter_messages) > 0",
                          "max(inferno_dead_letter_messages) > 10")
    assert raised != text
    (tmp_path / "alerts.yml").write_text(raised)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    run = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "InfernoDeadLetters" in run.stdout + run.stderr


# --- the rules ----------------------------------------------------------------------------------


def test_the_alerts_the_operators_rely_on_exist() -> None:
    assert {r["alert"] for r in rules()} == {
        "InfernoNoLiveWorker", "InfernoHighErrorRate", "InfernoHighLatency",
        "InfernoQueueGrowing", "InfernoDeadLetters", "InfernoLoopDown"}


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_waits_has_a_severity_and_says_what_to_do(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "a `for:` keeps one bad scrape from paging"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"]) > 80


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    names = {r["alert"] for r in rules()}
    assert firing == names, f"never tested firing: {names - firing}"
    assert silent == names, f"never tested silent (pending or below threshold): {names - silent}"


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_templated_on_its_data_source_and_model() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] == "inferno"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["includeAll"] and model["multi"]
    assert model["definition"] == "label_values(infer_requests_total, model)"
    assert model["query"] == model["definition"]
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_the_dashboard_has_the_panels_operators_read() -> None:
    titles = {p["title"] for p in panels()}
    assert titles >= {"Request rate", "Errors by code", "Latency p50 / p99",
                      "Batch size mean / p99", "Queue depth and consumers", "Live workers",
                      "Inference time p50 / p99"}
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_model_panels_follow_the_model_variable() -> None:
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            per_model = metrics_in(expr) - {"inferno_dead_letter_messages", "inferno_loop_down",
                                            "process_cpu_seconds_total"}
            if per_model:
                assert 'model=~"$model"' in expr, f"{panel['title']}: {expr}"


# --- metric names -------------------------------------------------------------------------------


def test_the_metric_pattern_finds_names_and_skips_strings_and_labels() -> None:
    expr = ('sum by (model, le) (rate(infer_latency_seconds_bucket{code!~"model_failed"}[5m]))'
            ' / max(inferno_live_workers) and model_loaded{model="x"} or process_open_fds')
    assert metrics_in(expr) == {"infer_latency_seconds_bucket", "inferno_live_workers",
                                "model_loaded", "process_open_fds"}


def test_every_metric_the_rules_and_the_dashboard_query_is_exported() -> None:
    exported = exported_samples()
    assert {"infer_requests_total", "infer_latency_seconds_bucket", "inferno_loop_down",
            "process_cpu_seconds_total", "model_loaded"} <= exported
    used: dict[str, set[str]] = {}
    for rule in rules():
        for name in metrics_in(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in dashboard_expressions():
        for name in metrics_in(expr):
            used.setdefault(name, set()).add("dashboard")
    assert {"inferno_queue_messages", "inferno_dead_letter_messages", "infer_batch_size_sum",
            "infer_inference_seconds_bucket"} <= set(used)
    unknown = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not unknown, f"queried but not exported by the code: {unknown}"
