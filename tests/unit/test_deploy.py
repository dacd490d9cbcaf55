"""The deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s (every overlay, as
`kubectl kustomize` renders it), deploy/prometheus.yml.

Docker and a cluster are not needed: the files are parsed and checked for what matters (commands,
settings, health checks, grace periods against the drain timeout, names that must agree across
files), and every INFERNO_ variable they set is validated by the settings classes themselves, so a
misspelt name (silently ignored at run time) or an invalid value fails here. The schema checks
(`check-jsonschema`, `kubernetes-validate --strict`) run when those dev tools are installed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from common.settings import FacadeSettings, WorkerSettings
from facade.health import health_router
from tests.unit.deploy import K8S, OVERLAYS, index, render

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"

BROKER_URL = "amqp://guest:guest@rabbitmq:5672/"
REDIS_URL = "redis://redis:6379/0"
SETTINGS = {f"INFERNO_{name.upper()}"
            for cls in (FacadeSettings, WorkerSettings) for name in cls.model_fields}


# --- helpers -----------------------------------------------------------------------------------

def _duration_s(value: str | int) -> float:
    """A compose duration ("1m30s", "45s", "500ms") in seconds."""
    if isinstance(value, int):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _check_settings(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every INFERNO_ variable is a real setting, and the settings classes accept the values."""
    unknown = sorted(k for k in env if k.startswith("INFERNO_") and k not in SETTINGS)
    assert not unknown, f"not Inferno settings (ignored at run time): {unknown}"
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("INFERNO_"):
            monkeypatch.setenv(key, str(value))
    FacadeSettings()
    WorkerSettings()


def _tool(module: str, script: str) -> list[str]:
    if importlib.util.find_spec(module) is not None:
        return [sys.executable, "-m", module]
    path = shutil.which(script)
    if path is None:
        pytest.skip(f"{script} is not installed (a dev tool: pip install {script})")
    return [path]


# --- docker-compose.yml ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def test_compose_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"rabbitmq", "redis", "facade", "worker"} <= set(services)
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["redis"]["image"] == "redis:7"
    assert services["rabbitmq"]["healthcheck"]["test"] == [
        "CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Optional services stay out of a plain `docker compose up`.
    for name, service in services.items():
        if name not in {"rabbitmq", "redis", "facade", "worker"}:
            assert service.get("profiles"), f"{name} starts by default"


@pytest.mark.parametrize("role", ["facade", "worker"])
def test_compose_inferno_roles(services: dict[str, dict[str, Any]], role: str) -> None:
    service = services[role]
    assert service["command"] == ["inferno", role]
    assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert service["image"] == services["facade"]["image"]  # one image for both roles
    env = service["environment"]
    assert env["INFERNO_BROKER_URL"] == BROKER_URL
    assert env["INFERNO_REDIS_URL"] == REDIS_URL
    assert env["INFERNO_REPO_ROOT"] == "/app/models"
    assert service["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_compose_facade(services: dict[str, dict[str, Any]]) -> None:
    facade = services["facade"]
    assert facade["environment"]["INFERNO_HOST"] == "0.0.0.0"
    assert "8000:8000" in facade["ports"]
    assert f"{facade['environment']['INFERNO_GRPC_PORT']}:8001" in facade["ports"]
    test = facade["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]  # the slim image has no curl
    assert "urllib.request" in test[3] and "/health/ready" in test[3]
    assert "127.0.0.1:8000" in test[3]
    # `inferno facade` finishes in-progress requests for up to 10 s after SIGTERM.
    assert _duration_s(facade["stop_grace_period"]) > 10


def test_compose_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker  # `--scale worker=3` would clash on a fixed host port
    assert worker["healthcheck"] == {"disable": True}  # no HTTP server in a worker
    drain = float(worker["environment"].get("INFERNO_DRAIN_TIMEOUT_S", 30))
    assert _duration_s(worker["stop_grace_period"]) > drain


@pytest.mark.parametrize("role", ["facade", "worker"])
def test_compose_settings_are_valid(services: dict[str, dict[str, Any]], role: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _check_settings(services[role]["environment"], monkeypatch)


def test_compose_schema() -> None:
    command = _tool("check_jsonschema", "check-jsonschema")
    result = subprocess.run(
        [*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_targets(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["inferno-facade"]["static_configs"][0]["targets"] == ["facade:8000"]
    (dns,) = jobs["inferno-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker"]
    assert str(dns["port"]) == services["worker"]["environment"]["INFERNO_METRICS_PORT"]
    volumes = services["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


# --- deploy/Dockerfile -------------------------------------------------------------------------

def _instructions(path: Path) -> list[str]:
    """A Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    return _instructions(DOCKERFILE)


def _index(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r}")


def test_dockerfile(dockerfile: list[str]) -> None:
    assert dockerfile[0] == "FROM python:3.11-slim"
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert dockerfile[-1] == 'CMD ["inferno", "serve"]'
    healthcheck = dockerfile[_index(dockerfile, r"^HEALTHCHECK ")]
    assert "/health/ready" in healthcheck and "urllib.request" in healthcheck
    assert "INFERNO_REPO_ROOT=/app/models" in dockerfile[_index(dockerfile, r"^ENV INFERNO_")]


def test_dockerfile_layers_cache_friendly(dockerfile: list[str]) -> None:
    torch = _index(dockerfile, r"pip install .*torch==")
    deps = _index(dockerfile, r"pip install -r ")
    first_source = _index(dockerfile, r"^COPY (common|facade|worker|inferno|bench) ")
    project = _index(dockerfile, r"pip install --no-deps \.")
    models = _index(dockerfile, r"^COPY models ")
    assert torch < deps < first_source < project < models


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_images_carry_minilms_onnx_files(name: str) -> None:
    """Built at image build into the cache they set, so no container exports them at start."""
    lines = _instructions(ROOT / "deploy" / name)
    build = _index(lines, r"^RUN python models/build.py minilm$")
    assert _index(lines, r"^COPY models ") < build < _index(lines, r"^USER ")
    env = [line for line in lines[:build] if line.startswith("ENV ")]
    assert any(re.search(r"\bINFERNO_CACHE_DIR=/opt/inferno/cache\b", line) for line in env)


def test_dockerfile_copies_every_package(dockerfile: list[str]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {line.split()[1] for line in dockerfile if line.startswith("COPY ")}
    assert packages <= copied, f"packages not in the image: {sorted(packages - copied)}"


# --- deploy/k8s (rendered with kubectl kustomize, every overlay) ------------------------------

@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def documents(overlay: str) -> list[dict[str, Any]]:
    return render(overlay)


@pytest.fixture(scope="module")
def k8s(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return index(documents)


@pytest.fixture(scope="module")
def config(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = k8s["ConfigMap", "inferno-config"]["data"]
    return data


def _container(k8s: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = k8s["Deployment", name]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _pod(k8s: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    pod: dict[str, Any] = k8s["Deployment", name]["spec"]["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_k8s_layout() -> None:
    # The base has no autoscaler; each overlay adds exactly one, so applying an overlay is the
    # choice between KEDA and the HPA (both on one Deployment would fight over its replicas).
    assert {"keda", "hpa", "gpu"} <= set(OVERLAYS)
    assert not list(K8S.glob("*.yaml")), "manifests live in base/ and overlays/"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for resource in base["resources"]:
        kinds = {d["kind"] for d in yaml.safe_load_all((K8S / "base" / resource).read_text()) if d}
        assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject"}, resource


def test_k8s_one_autoscaler(overlay: str, k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    scalers = [key for key in k8s if key[0] in {"HorizontalPodAutoscaler", "ScaledObject"}]
    assert len(scalers) == 1, f"{overlay}: {scalers}"
    (scaler,) = scalers
    target = k8s[scaler]["spec"]["scaleTargetRef"]
    assert target["name"] == "inferno-worker"
    assert ("Deployment", target["name"]) in k8s
    assert target.get("kind", "Deployment") == "Deployment"


def test_k8s_kinds(overlay: str, k8s: dict[tuple[str, str], dict[str, Any]],
                   documents: list[dict[str, Any]]) -> None:
    assert {("ConfigMap", "inferno-config"), ("Secret", "inferno-rabbitmq"),
            ("Deployment", "inferno-facade"), ("Service", "inferno-facade"),
            ("PodDisruptionBudget", "inferno-facade"), ("Deployment", "inferno-worker"),
            ("PodDisruptionBudget", "inferno-worker")} <= set(k8s)
    for doc in documents:
        assert "namespace" not in doc["metadata"], "manifests are namespace-less"


def test_k8s_placeholders_are_only_the_secrets(documents: list[dict[str, Any]]) -> None:
    # `kubectl apply -k <overlay> -l 'inferno.io/placeholder!=true'` (deploy/README.md) must skip
    # every placeholder Secret and nothing else.
    for doc in documents:
        placeholder = doc["metadata"].get("labels", {}).get("inferno.io/placeholder") == "true"
        assert placeholder == (doc["kind"] == "Secret"), doc["metadata"]["name"]


def test_k8s_config_settings_are_valid(config: dict[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values must be strings"
    assert config["INFERNO_HOST"] == "0.0.0.0"
    assert "INFERNO_BROKER_URL" not in config  # composed from the Secret's credentials
    _check_settings({**config, "INFERNO_BROKER_URL": "amqp://u:p@rabbitmq:5672/"}, monkeypatch)


@pytest.mark.parametrize("name", ["inferno-facade", "inferno-worker"])
def test_k8s_pod_settings_are_valid(k8s: dict[tuple[str, str], dict[str, Any]],
                                    config: dict[str, str], name: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The container's own env (overlay patches included) on top of the ConfigMap, as in the pod.
    literal = {k: e["value"] for k, e in _env(_container(k8s, name)).items() if "value" in e}
    literal["INFERNO_BROKER_URL"] = "amqp://u:p@rabbitmq:5672/"
    _check_settings({**config, **literal}, monkeypatch)


@pytest.mark.parametrize("name", ["inferno-facade", "inferno-worker"])
def test_k8s_deployment_wiring(k8s: dict[tuple[str, str], dict[str, Any]], name: str) -> None:
    deployment = k8s["Deployment", name]
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    container = _container(k8s, name)
    assert container["command"] == ["inferno", name.removeprefix("inferno-")]
    assert {"configMapRef": {"name": "inferno-config"}} in container["envFrom"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Every variable a $(reference) names is defined before it (Kubernetes expands only those).
    env = container["env"]
    for i, var in enumerate(env):
        for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
            assert ref in [e["name"] for e in env[:i]], f"{var['name']} uses undefined {ref}"
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["key"] in k8s["ConfigMap", ref["name"]]["data"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in k8s["Secret", ref["name"]]["stringData"]
    broker = next(e["value"] for e in env if e["name"] == "INFERNO_BROKER_URL")
    assert broker.startswith("amqp://")
    pod = _pod(k8s, name)
    assert pod["enableServiceLinks"] is False  # a Service `inferno` would set INFERNO_PORT
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", ["inferno-facade", "inferno-worker"])
def test_k8s_pdb_selects_its_pods(k8s: dict[tuple[str, str], dict[str, Any]], name: str) -> None:
    selector = k8s["PodDisruptionBudget", name]["spec"]["selector"]["matchLabels"]
    labels = k8s["Deployment", name]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    other = "inferno-worker" if name == "inferno-facade" else "inferno-facade"
    other_labels = k8s["Deployment", other]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= other_labels.items(), "the PDB also selects the other role"


def test_k8s_facade(k8s: dict[tuple[str, str], dict[str, Any]], config: dict[str, str]) -> None:
    assert k8s["Deployment", "inferno-facade"]["spec"]["replicas"] == 2
    container = _container(k8s, "inferno-facade")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config["INFERNO_PORT"])
    assert ports["grpc"] == int(config["INFERNO_GRPC_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    routes = {getattr(r, "path", None)
              for r in health_router(None, CollectorRegistry()).routes}  # type: ignore[arg-type]
    probes = [container[p]["httpGet"]
              for p in ("readinessProbe", "livenessProbe", "startupProbe") if p in container]
    assert {probe["path"] for probe in probes} <= routes
    assert {probe["port"] for probe in probes} <= set(ports)
    pre_stop = container["lifecycle"]["preStop"]
    sleep_s = (pre_stop["sleep"]["seconds"] if "sleep" in pre_stop
               else int(pre_stop["exec"]["command"][-1]))
    assert sleep_s > 0
    # preStop, then up to 10 s of uvicorn's graceful shutdown in `inferno facade`.
    assert _pod(k8s, "inferno-facade")["terminationGracePeriodSeconds"] > sleep_s + 10
    assert container["image"] == "inferno:0.1.0"  # the CPU image, in every overlay


def test_k8s_facade_service(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    service = k8s["Service", "inferno-facade"]
    template = k8s["Deployment", "inferno-facade"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    port_names = {p["name"] for p in _container(k8s, "inferno-facade")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_k8s_worker(k8s: dict[tuple[str, str], dict[str, Any]], config: dict[str, str]) -> None:
    assert k8s["Deployment", "inferno-worker"]["spec"]["replicas"] == 2
    container = _container(k8s, "inferno-worker")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(config["INFERNO_METRICS_PORT"])
    assert "readinessProbe" not in container  # no HTTP server; liveness = Redis heartbeat
    grace = _pod(k8s, "inferno-worker")["terminationGracePeriodSeconds"]
    drain = float(_env(container).get("INFERNO_DRAIN_TIMEOUT_S", {}).get(
        "value", config["INFERNO_DRAIN_TIMEOUT_S"]))
    assert grace > drain
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation is relative to it


def test_k8s_worker_hpa() -> None:
    k8s = index(render("hpa"))
    spec = k8s["HorizontalPodAutoscaler", "inferno-worker"]["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "inferno-worker"}
    assert spec["minReplicas"] <= spec["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
               for m in spec["metrics"])


def test_k8s_runs_as_the_image_user(k8s: dict[tuple[str, str], dict[str, Any]],
                                    dockerfile: list[str]) -> None:
    user = [line.split()[1] for line in dockerfile if line.startswith("USER ")][-1]
    for name in ("inferno-facade", "inferno-worker"):
        assert str(_pod(k8s, name)["securityContext"]["runAsUser"]) == user.split(":")[0]


def test_k8s_schema(overlay: str, documents: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict on every core object of the rendered overlay (the KEDA
    objects are validated against KEDA's schemas in test_k8s_keda.py)."""
    command = _tool("kubernetes_validate", "kubernetes-validate")
    core = [doc for doc in documents if not doc["apiVersion"].startswith("keda.sh/")]
    assert len(core) >= 7
    paths = []
    for i, doc in enumerate(core):
        path = tmp_path / f"{i:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    result = subprocess.run([*command, "--strict", "--quiet", *paths],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{overlay}: {result.stdout}{result.stderr}"


def test_k8s_schema_rejects_an_unknown_field(tmp_path: Path) -> None:
    # The strict check above is not vacuous: a misspelt field fails it.
    command = _tool("kubernetes_validate", "kubernetes-validate")
    deployment = index(render("keda"))["Deployment", "inferno-worker"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = subprocess.run([*command, "--strict", "--quiet", str(path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
