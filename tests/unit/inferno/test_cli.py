"""The command line: each role's settings come from the environment with the flags over them,
built as objects; the process environment is never written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.model.config import Device
from common.settings import CommonSettings, FacadeSettings, WorkerSettings
from inferno.cli import parse_args, settings_from


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment that names something else for every flag of the tests."""
    for key in list(os.environ):
        if key.upper().startswith("INFERNO_"):
            monkeypatch.delenv(key)
    for key, value in {"REPO_ROOT": "/env/models", "PORT": "9000", "HOST": "0.0.0.0",
                       "DEVICE": "cuda", "PRELOAD": "mlp", "MODELS": "mlp,bag"}.items():
        monkeypatch.setenv(f"INFERNO_{key}", value)
    yield monkeypatch


def test_a_flag_wins_over_its_variable_and_the_environment_is_left_alone() -> None:
    before = dict(os.environ)
    args = parse_args(["worker", "--repo", "/flag/models", "--models", "sum, slow", "--burst"])
    settings = settings_from(WorkerSettings, args)
    assert settings.repo_root == Path("/flag/models")
    assert settings.models == ["sum", "slow"]
    assert settings.burst is True
    # No flag given: the environment decides.
    assert settings.preload == ["mlp"] and settings.device is Device.CUDA
    assert dict(os.environ) == before
    assert settings_from(WorkerSettings, parse_args(["worker"])).repo_root == Path("/env/models")


def test_serve_builds_both_roles_from_the_same_flags() -> None:
    before = dict(os.environ)
    args = parse_args(["serve", "--port", "8123", "--repo", "/flag/models", "--device", "cpu"])
    facade, worker = settings_from(FacadeSettings, args), settings_from(WorkerSettings, args)
    assert (facade.port, facade.host, facade.repo_root) == (8123, "0.0.0.0", Path("/flag/models"))
    assert (worker.device, worker.repo_root) == (Device.CPU, Path("/flag/models"))
    assert settings_from(CommonSettings, args).repo_root == Path("/flag/models")
    assert dict(os.environ) == before


def test_burst_not_given_leaves_the_variable_in_charge(env: pytest.MonkeyPatch) -> None:
    env.setenv("INFERNO_BURST", "true")
    assert settings_from(WorkerSettings, parse_args(["worker"])).burst is True
    env.delenv("INFERNO_BURST")
    assert settings_from(WorkerSettings, parse_args(["worker"])).burst is False


def test_an_invalid_flag_value_names_its_setting() -> None:
    with pytest.raises(ValidationError, match="port"):
        settings_from(FacadeSettings, parse_args(["facade", "--port", "70000"]))


def test_burst_is_a_worker_flag_only() -> None:
    with pytest.raises(SystemExit):
        parse_args(["serve", "--burst"])
