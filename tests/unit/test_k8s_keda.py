"""The autoscaling and GPU parts of deploy/k8s, as `kubectl kustomize` renders the overlays, and
deploy/Dockerfile.cuda.

KEDA's objects are validated against KEDA's own published schemas (`@kubernetes-models/keda`,
through tests/unit/deploy/validate_keda.mjs); the checks here add what a schema cannot know: the
queues the triggers watch are the queues Inferno declares for the repository's models, the
references between objects resolve, the GPU variant reaches the pods.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from common.model.repository import ModelRepository
from common.wire.messages import queue_name
from tests.unit.deploy import Manifests, index, render, validate_keda

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERFILE_CUDA = ROOT / "deploy" / "Dockerfile.cuda"
KEDA_OVERLAYS = ["keda", "gpu"]
"""The overlays that scale with KEDA (gpu is overlays/keda plus components/gpu)."""
SCALER_MODES = {"QueueLength", "MessageRate"}
"""The modes of KEDA's rabbitmq scaler."""


def _keda_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["apiVersion"].startswith("keda.sh/")]


def _scaled_object(k8s: Manifests) -> dict[str, Any]:
    (obj,) = [doc for (kind, _), doc in k8s.items() if kind == "ScaledObject"]
    return obj


def _worker(k8s: Manifests) -> dict[str, Any]:
    (container,) = k8s["Deployment", "inferno-worker"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _expected_queues() -> set[str]:
    repository = ModelRepository(ROOT / "models")
    repository.scan()
    assert not repository.problems, repository.problems
    return {queue_name(name, version)
            for name in repository.names() for version in repository.versions(name)}


@pytest.fixture(scope="module", params=KEDA_OVERLAYS)
def keda(request: pytest.FixtureRequest) -> Manifests:
    return index(render(request.param))


# --- KEDA's schemas ----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", KEDA_OVERLAYS)
def test_keda_objects_match_kedas_schemas(overlay: str) -> None:
    objects = _keda_objects(render(overlay))
    assert {obj["kind"] for obj in objects} == {"ScaledObject", "TriggerAuthentication"}
    result = validate_keda(objects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == len(objects)


def test_keda_schema_rejects_an_integer_trigger_value() -> None:
    objects = _keda_objects(render("keda"))
    (scaled,) = [obj for obj in objects if obj["kind"] == "ScaledObject"]
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 20  # KEDA wants "20"
    result = validate_keda(objects)
    assert result.returncode == 1
    assert "metadata/value must be string" in result.stdout


def test_keda_schema_rejects_a_misplaced_field() -> None:
    objects = _keda_objects(render("keda"))
    (auth,) = [obj for obj in objects if obj["kind"] == "TriggerAuthentication"]
    auth["spec"]["secretTargetRef"][0].pop("key")
    result = validate_keda(objects)
    assert result.returncode == 1
    assert "TriggerAuthentication/inferno-rabbitmq:" in result.stdout


# --- the ScaledObject --------------------------------------------------------------------------

def test_keda_triggers_watch_every_model_queue(keda: Manifests) -> None:
    triggers = _scaled_object(keda)["spec"]["triggers"]
    watched = [t["metadata"]["queueName"] for t in triggers]
    assert len(watched) == len(set(watched)), "a queue is watched twice"
    assert set(watched) == _expected_queues()


def test_keda_trigger_metadata(keda: Manifests) -> None:
    config = keda["ConfigMap", "inferno-config"]["data"]
    for trigger in _scaled_object(keda)["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert meta["mode"] in SCALER_MODES
        assert re.fullmatch(r"\d+(\.\d+)?", meta["value"]) and float(meta["value"]) > 0
        # Over AMQP the scaler counts only ready messages, not the prefetched (unacknowledged)
        # batches the workers hold; MessageRate exists only over the management API.
        assert meta["protocol"] == "http"
        host = urlsplit(meta["host"])
        assert host.scheme == "http" and host.port == 15672
        assert host.hostname == config["RABBITMQ_HOST"]
        assert host.username is None and host.password is None, "credentials belong in a Secret"
        assert meta.get("vhostName", "/") == "/"  # the vhost of INFERNO_BROKER_URL (…:5672/)


def test_keda_authentication_reads_the_broker_secret(keda: Manifests) -> None:
    secret = keda["Secret", "inferno-rabbitmq"]["stringData"]
    for trigger in _scaled_object(keda)["spec"]["triggers"]:
        auth = keda["TriggerAuthentication", trigger["authenticationRef"]["name"]]
        refs = auth["spec"]["secretTargetRef"]
        assert {ref["parameter"] for ref in refs} in ({"username", "password"}, {"host"})
        for ref in refs:
            assert ref["name"] == "inferno-rabbitmq"
            assert ref["key"] in secret


def test_keda_scales_the_worker_deployment(keda: Manifests) -> None:
    spec = _scaled_object(keda)["spec"]
    assert spec["scaleTargetRef"]["name"] == "inferno-worker"
    assert ("Deployment", "inferno-worker") in keda
    # No scale to zero: with no worker the facade is not ready, and no request would wake one.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    pod = keda["Deployment", "inferno-worker"]["spec"]["template"]["spec"]
    drain = float(keda["ConfigMap", "inferno-config"]["data"]["INFERNO_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > drain
    labels = keda["Deployment", "inferno-worker"]["metadata"]["labels"]
    assert _scaled_object(keda)["metadata"]["labels"].items() <= labels.items()


# --- the GPU variant ---------------------------------------------------------------------------

def _cuda_tag() -> str:
    match = re.search(r"docker build -f deploy/Dockerfile\.cuda -t (\S+) \.",
                      DOCKERFILE_CUDA.read_text())
    assert match, "Dockerfile.cuda names its tag in its header"
    return match.group(1)


def test_gpu_worker() -> None:
    k8s = index(render("gpu"))
    worker = _worker(k8s)
    assert worker["image"] == _cuda_tag()
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["INFERNO_DEVICE"] == "cuda"  # overrides the ConfigMap's cpu
    assert k8s["ConfigMap", "inferno-config"]["data"]["INFERNO_DEVICE"] == "cpu"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = k8s["Deployment", "inferno-worker"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # The rest of the worker is the base's (the patch merged, not replaced).
    base = _worker(index(render("keda")))
    assert worker["command"] == base["command"]
    assert [e for e in base["env"] if e["name"] != "INFERNO_DEVICE"] == [
        e for e in worker["env"] if e["name"] != "INFERNO_DEVICE"]
    # The facade needs no GPU and keeps the CPU image.
    (facade,) = k8s["Deployment", "inferno-facade"]["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in facade["resources"]["limits"]
    assert not facade["image"].endswith("-cuda")


@pytest.mark.parametrize("overlay", ["keda", "hpa"])
def test_cpu_overlays_have_no_gpu(overlay: str) -> None:
    k8s = index(render(overlay))
    worker = _worker(k8s)
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    assert worker["image"] != _cuda_tag()


def test_gpu_overlay_is_the_keda_overlay_plus_gpu() -> None:
    keda = index(render("keda"))
    gpu = index(render("gpu"))
    assert set(keda) == set(gpu)
    for key in keda:
        if key != ("Deployment", "inferno-worker"):
            assert gpu[key] == keda[key], key
    assert gpu["Deployment", "inferno-worker"] != keda["Deployment", "inferno-worker"]


# --- deploy/Dockerfile.cuda --------------------------------------------------------------------

def _instructions(path: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_cuda_stages() -> None:
    lines = _instructions(DOCKERFILE_CUDA)
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    assert stages[0] == "FROM python:3.11-slim AS build"
    assert stages[-1].startswith("FROM python:3.11-slim")
    final = lines[lines.index(stages[-1]):]
    # The runtime stage copies the built virtualenv, installs nothing itself.
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert not [line for line in final if "pip install" in line]
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128" in lines
    cpu_torch = [line for line in _instructions(DOCKERFILE)
                 if line.startswith("ARG TORCH_VERSION=")]
    assert cpu_torch and cpu_torch[0] in lines, "the CUDA image pins the CPU image's torch"


def test_dockerfile_cuda_runtime() -> None:
    lines = _instructions(DOCKERFILE_CUDA)
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] == "10001:10001"  # as deploy/Dockerfile and the pods' runAsUser
    assert final[-1] == 'CMD ["inferno", "worker"]'
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "INFERNO_DEVICE=cuda" in env and "INFERNO_REPO_ROOT=/app/models" in env
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert not [line for line in final if line.startswith("HEALTHCHECK")]  # no HTTP server
    assert "COPY models models" in final
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert {pattern.rstrip("*") for pattern in include} <= copied
