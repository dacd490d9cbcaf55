"""``inferno facade --workers N``: the flag, its bounds and its help; the process tree itself is
tested for real in tests/distributed/test_facade_processes.py."""

from __future__ import annotations

import pytest

from inferno.cli import _parser, parse_args


def test_workers_defaults_to_one_process() -> None:
    assert parse_args(["facade"]).workers == 1
    assert parse_args(["facade", "--workers", "4"]).workers == 4


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
