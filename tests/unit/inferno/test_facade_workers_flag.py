"""``inferno facade --workers N`` (``INFERNO_FACADE_PROCESSES``): the flag, its bounds and its
help; the process tree itself is tested for real in tests/distributed/test_facade_processes.py."""

from __future__ import annotations

import pytest

from common.settings import FacadeSettings
from inferno.cli import _parser, parse_args, settings_from


def test_processes_from_the_flag_or_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERNO_FACADE_PROCESSES", raising=False)
    assert settings_from(FacadeSettings, parse_args(["facade"])).facade_processes == 1
    monkeypatch.setenv("INFERNO_FACADE_PROCESSES", "3")  # a container with a fixed command
    assert settings_from(FacadeSettings, parse_args(["facade"])).facade_processes == 3
    flag = settings_from(FacadeSettings, parse_args(["facade", "--workers", "2"]))
    assert flag.facade_processes == 2  # the flag wins
    monkeypatch.setenv("INFERNO_FACADE_PROCESSES", "0")
    with pytest.raises(ValueError, match="facade_processes"):
        settings_from(FacadeSettings, parse_args(["facade"]))


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_workers_below_one_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["facade", "--workers", value])
    assert "--workers" in capsys.readouterr().err


def test_workers_is_a_facade_flag_and_documented() -> None:
    commands = next(a for a in _parser()._actions if a.dest == "command")
    facade_help = commands.choices["facade"].format_help()  # type: ignore[index]
    assert "--workers N" in facade_help and "SO_REUSEPORT" in facade_help
    with pytest.raises(SystemExit):
        parse_args(["serve", "--workers", "2"])
