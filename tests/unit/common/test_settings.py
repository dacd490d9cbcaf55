"""Settings from ``INFERNO_`` environment variables, per role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.model.config import Device
from common.settings import DEFAULT_BUCKETS, CommonSettings, FacadeSettings, WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No INFERNO_ variable of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.upper().startswith("INFERNO_"):
            monkeypatch.delenv(key)
    yield monkeypatch


def test_defaults_are_embedded_mode() -> None:
    settings = FacadeSettings()
    assert settings.broker_url is None and settings.redis_url is None
    assert settings.repo_root == Path("models")
    assert settings.metrics_buckets == DEFAULT_BUCKETS
    worker = WorkerSettings()
    assert worker.device is Device.AUTO
    assert worker.preload == ["*"] and worker.models == ["*"]


def test_common_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    clean_env.setenv("INFERNO_REDIS_URL", "redis://127.0.0.1:6379/0")
    clean_env.setenv("INFERNO_REPO_ROOT", "/srv/models")
    clean_env.setenv("INFERNO_HEARTBEAT_INTERVAL_S", "0.5")
    clean_env.setenv("INFERNO_LOG_JSON", "false")
    settings = CommonSettings()
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.repo_root == Path("/srv/models")
    assert settings.heartbeat_interval_s == 0.5
    assert settings.log_json is False


def test_unknown_variables_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_NO_SUCH_SETTING", "1")
    clean_env.setenv("INFERNO_PORT", "9000")  # a facade setting: ignored by a worker
    WorkerSettings()
    assert FacadeSettings().port == 9000


@pytest.mark.parametrize(("value", "expected"), [
    ("a,b", ["a", "b"]),
    (" a , b ,, c ", ["a", "b", "c"]),
    ("*", ["*"]),
    ("", []),
    ("solo", ["solo"]),
])
def test_preload_and_models_are_comma_lists(clean_env: pytest.MonkeyPatch, value: str,
                                            expected: list[str]) -> None:
    clean_env.setenv("INFERNO_PRELOAD", value)
    clean_env.setenv("INFERNO_MODELS", value)
    settings = WorkerSettings()
    assert settings.preload == expected
    assert settings.models == expected


def test_worker_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_DEVICE", "cuda")
    clean_env.setenv("INFERNO_STATE_RECONCILE_INTERVAL_S", "1.5")
    clean_env.setenv("INFERNO_DRAIN_TIMEOUT_S", "3")
    settings = WorkerSettings()
    assert settings.device is Device.CUDA
    assert settings.state_reconcile_interval_s == 1.5
    assert settings.drain_timeout_s == 3.0


@pytest.mark.parametrize(("key", "value"), [
    ("INFERNO_DEVICE", "tpu"),
    ("INFERNO_STATE_RECONCILE_INTERVAL_S", "0"),
    ("INFERNO_HEARTBEAT_INTERVAL_S", "-1"),
    ("INFERNO_TORCH_THREADS", "-1"),
])
def test_bad_worker_values(clean_env: pytest.MonkeyPatch, key: str, value: str) -> None:
    clean_env.setenv(key, value)
    with pytest.raises(ValidationError):
        WorkerSettings()


def test_metrics_buckets_comma_list(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_METRICS_BUCKETS", "0.001, 0.01,0.1,1")
    assert FacadeSettings().metrics_buckets == (0.001, 0.01, 0.1, 1.0)


@pytest.mark.parametrize("value", ["0.5,0.1", "1,2,0.5"])
def test_metrics_buckets_must_increase(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("INFERNO_METRICS_BUCKETS", value)
    with pytest.raises(ValidationError, match="metrics_buckets must be increasing"):
        FacadeSettings()


def test_metrics_buckets_must_strictly_increase(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_METRICS_BUCKETS", "0.1,0.1,1")
    with pytest.raises(ValidationError, match="metrics_buckets must be increasing"):
        FacadeSettings()


def test_metrics_buckets_must_be_numbers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_METRICS_BUCKETS", "0.1,fast")
    with pytest.raises(ValidationError):
        FacadeSettings()


def test_request_timeout_must_not_exceed_the_maximum(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFERNO_REQUEST_TIMEOUT_MS", "5000")
    clean_env.setenv("INFERNO_MAX_REQUEST_TIMEOUT_MS", "1000")
    with pytest.raises(ValidationError, match="request_timeout_ms must not exceed"):
        FacadeSettings()
    clean_env.setenv("INFERNO_MAX_REQUEST_TIMEOUT_MS", "5000")
    assert FacadeSettings().request_timeout_ms == 5000


@pytest.mark.parametrize(("models", "preload", "name", "serves", "preloads"), [
    (["*"], ["*"], "a", True, True),
    (["*"], ["a"], "a", True, True),
    (["*"], ["a"], "b", True, False),
    (["*"], [], "a", True, False),
    (["a"], ["*"], "a", True, True),
    (["a"], ["*"], "b", False, False),  # preloading needs serving
    (["a"], ["b"], "b", False, False),
    ([], ["*"], "a", False, False),
])
def test_serves_and_preloads(models: list[str], preload: list[str], name: str, serves: bool,
                             preloads: bool) -> None:
    settings = WorkerSettings(models=models, preload=preload)
    assert settings.serves(name) is serves
    assert settings.preloads(name) is preloads


def test_keyword_arguments_take_comma_strings_too() -> None:
    settings = WorkerSettings(models="a,b", preload="b")  # type: ignore[arg-type]
    assert settings.models == ["a", "b"] and settings.preloads("b") and not settings.preloads("a")


def test_torch_threads_leave_the_event_loop_a_core(clean_env: pytest.MonkeyPatch) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert WorkerSettings().intra_op_threads == max(1, cpus - 1)
    clean_env.setattr(os, "sched_getaffinity", lambda _: {0})  # one CPU: torch still gets one
    assert WorkerSettings().intra_op_threads == 1
    clean_env.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    assert WorkerSettings().intra_op_threads == 15
    clean_env.setenv("INFERNO_TORCH_THREADS", "3")  # an explicit count wins
    assert WorkerSettings().intra_op_threads == 3
