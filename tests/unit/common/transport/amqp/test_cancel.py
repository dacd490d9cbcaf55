"""The worker's record of cancel notices: what a notice marks, and that the record stays bounded
(expired notices go first, then the oldest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from common.transport.amqp import cancel as amqp_cancel
from common.transport.amqp.cancel import Cancellations, cancel_notice
from common.wire.messages import HEADER_DEADLINE


def test_a_notice_marks_its_request_only() -> None:
    notices = Cancellations()
    notices.add("inferno.reply.a", "1f", time.time() + 10)
    assert ("inferno.reply.a", "1f") in notices
    assert ("inferno.reply.b", "1f") not in notices  # another facade's request 1f
    assert ("inferno.reply.a", "20") not in notices


def test_the_record_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqp_cancel, "MAX_NOTICES", 4)
    notices = Cancellations()
    now = time.time()
    notices.add("r", "expired", now - 1)
    for i in range(3):
        notices.add("r", str(i), now + 10)
    notices.add("r", "new", now + 10)  # full: the expired one goes
    assert len(notices) == 4 and ("r", "expired") not in notices
    notices.add("r", "newer", now + 10)  # full, none expired: the oldest goes
    assert len(notices) == 4 and ("r", "0") not in notices and ("r", "newer") in notices


def test_a_notice_expires_with_its_request() -> None:
    deadline = time.time() + 2.5
    properties = cancel_notice("inferno.reply.a", "1f", deadline)
    assert (properties.reply_to, properties.correlation_id) == ("inferno.reply.a", "1f")
    assert properties.headers == {HEADER_DEADLINE: round(deadline * 1000)}
    assert properties.expiration is not None and 2000 < int(properties.expiration) <= 2501


@pytest.mark.parametrize("written", [lambda ms: ms, float, str, lambda ms: str(ms).encode()])
async def test_a_notice_reads_its_deadline_by_the_rule_requests_do(
        written: Callable[[int], object]) -> None:
    """One deadline codec (issue 22): the notice once took an integer only."""
    deadline = time.time() + 5
    notices = Cancellations()
    notice = SimpleNamespace(reply_to="r", correlation_id="c",
                             headers={HEADER_DEADLINE: written(round(deadline * 1000))})
    await notices._on_notice(notice)  # type: ignore[arg-type]
    assert notices.abandoned("r", "c") and not notices.abandoned("r", "other")


async def test_a_notice_with_a_malformed_deadline_is_ignored() -> None:
    notices = Cancellations()
    for deadline in ("soon", -1, None, True):
        notice = SimpleNamespace(reply_to="r", correlation_id="c",
                                 headers={HEADER_DEADLINE: deadline})
        await notices._on_notice(notice)  # type: ignore[arg-type]
    assert len(notices) == 0
