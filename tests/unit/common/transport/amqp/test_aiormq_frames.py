"""``check_internals``: the aiormq/pamqp internals the outbox writes frames with, looked for at
start-up. Each failing case hands the check a copy of the installed classes with one piece taken
away, never a patched aiormq. That a real channel has what the check found on its class is what
every AMQP contract and distributed test relies on (their workers write through the outbox)."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import aiormq
import pytest
from pamqp.commands import Basic

from common.transport.amqp.aiormq_frames import (
    ATTRIBUTES,
    INSTALLED,
    PARAMETERS,
    UnsupportedAiormq,
    check_internals,
)


def installed_but(**replaced: Any) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(INSTALLED), **replaced})


def test_the_installed_aiormq_has_everything() -> None:
    check_internals()


def test_instance_attributes_are_found_on_the_class_without_a_connection() -> None:
    # aiormq assigns these in Channel.__init__: no class attribute holds them.
    assert not hasattr(aiormq.Channel, "write_queue")
    assert {"number", "max_content_size", "write_queue"} <= set(ATTRIBUTES["Channel"])
    check_internals(INSTALLED)


def test_a_missing_channel_attribute_is_named_with_the_aiormq_version() -> None:
    class Channel:  # a release whose constructor no longer sets write_queue
        is_closed = False

        def __init__(self) -> None:
            self.number = 1
            self.max_content_size = 1

    with pytest.raises(UnsupportedAiormq) as info:
        check_internals(installed_but(Channel=Channel))
    message = str(info.value)
    assert f"aiormq {version('aiormq')}" in message
    assert "Channel.write_queue" in message
    assert "Channel.number" not in message and "max_content_size" not in message


def test_a_version_given_is_the_version_named() -> None:
    with pytest.raises(UnsupportedAiormq, match=r"aiormq 9\.0\.0 .*ChannelFrame\.marshall"):
        check_internals(installed_but(ChannelFrame=object), aiormq_version="9.0.0")


def test_a_frame_class_that_is_gone_is_named() -> None:
    basic = SimpleNamespace(Ack=Basic.Ack, Reject=Basic.Reject)  # no Basic.Publish
    with pytest.raises(UnsupportedAiormq, match=r"Basic\.Publish\(routing_key=\)"):
        check_internals(installed_but(Basic=basic))


def test_a_renamed_keyword_is_named() -> None:
    class Ack:
        def __init__(self, tag: int = 0, multiple: bool = False) -> None:
            pass

    basic = SimpleNamespace(Publish=Basic.Publish, Ack=Ack, Reject=Basic.Reject)
    with pytest.raises(UnsupportedAiormq) as info:
        check_internals(installed_but(Basic=basic))
    assert "Basic.Ack(delivery_tag=)" in str(info.value)
    assert "multiple" not in str(info.value)


def test_everything_missing_is_named_at_once() -> None:
    with pytest.raises(UnsupportedAiormq) as info:
        check_internals(SimpleNamespace())
    message = str(info.value)
    for owner, names in ATTRIBUTES.items():
        assert all(f"{owner}.{name}" in message for name in names)
    for owner, names in PARAMETERS.items():
        assert all(f"{owner}({name}=)" in message for name in names)

