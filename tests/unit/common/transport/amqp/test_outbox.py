"""``Outbox``: what a worker's channel owes the broker, written once per event-loop turn.

The outbox writes to its channel's frame queue; here the channel is a stand-in that has only that
queue, and each test decodes what was written with pamqp, frame by frame, as the broker would.
The broker-side semantics (an ack after its reply, redelivery of what was not acknowledged) are
covered against the real RabbitMQ by the contract and distributed suites.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from common.transport.amqp.outbox import Outbox

CHANNEL = 7


@dataclass
class StandInChannel:
    """The part of ``aiormq.Channel`` an outbox touches."""

    number: int = CHANNEL
    max_content_size: int = 1000
    is_closed: bool = False
    write_queue: asyncio.Queue[ChannelFrame] = field(default_factory=asyncio.Queue)

    def writes(self) -> list[list[Any]]:
        """Every write so far, each as the frames it carried."""
        writes = []
        while not self.write_queue.empty():
            payload = self.write_queue.get_nowait().payload
            frames = []
            while payload:
                consumed, channel, decoded = frame.unmarshal(payload)
                assert channel == CHANNEL
                frames.append(decoded)
                payload = payload[consumed:]
            writes.append(frames)
        return writes


async def turn() -> None:
    """Let the event loop run the outbox's flush."""
    await asyncio.sleep(0)


def outbox_on(channel: StandInChannel) -> Outbox:
    return Outbox(cast(aiormq.Channel, channel))


def reply_props(correlation_id: str) -> Basic.Properties:
    return Basic.Properties(correlation_id=correlation_id)


def kinds(frames: list[Any]) -> list[str]:
    return [type(f).__name__ for f in frames]


async def test_a_batch_leaves_in_one_write_replies_first_then_one_ack() -> None:
    channel = StandInChannel()
    outbox = outbox_on(channel)
    for tag in (1, 2, 3):
        outbox.delivered(tag)
    for tag in (1, 2, 3):
        outbox.publish("reply-q", f"body-{tag}".encode(), reply_props(str(tag)))
        outbox.ack(tag)
    await turn()

    [write] = channel.writes()
    assert kinds(write) == ["Publish", "ContentHeader", "ContentBody"] * 3 + ["Ack"]
    assert [f.value for f in write if isinstance(f, ContentBody)] == [b"body-1", b"body-2",
                                                                       b"body-3"]
    assert [f.properties.correlation_id for f in write if isinstance(f, ContentHeader)] == [
        "1", "2", "3"]
    ack = write[-1]
    assert (ack.delivery_tag, ack.multiple) == (3, True)


async def test_a_multiple_ack_never_spans_a_delivery_in_flight() -> None:
    channel = StandInChannel()
    outbox = outbox_on(channel)
    for tag in (1, 2, 3, 4):
        outbox.delivered(tag)
    outbox.ack(1)
    outbox.ack(3)
    outbox.ack(4)
    await turn()
    # Tag 2 is still being computed: ack(multiple) of 4 would acknowledge it too. 3 and 4 are
    # acknowledged one by one, so that a slow batch does not hold the prefetch window.
    [write] = channel.writes()
    assert [(a.delivery_tag, a.multiple) for a in write] == [(1, True), (3, False), (4, False)]

    outbox.ack(2)
    await turn()
    [[ack]] = channel.writes()
    assert (ack.delivery_tag, ack.multiple) == (2, True)


async def test_a_rejection_goes_at_once_and_no_ack_ends_on_a_rejected_tag() -> None:
    channel = StandInChannel()
    outbox = outbox_on(channel)
    for tag in (1, 2, 3):
        outbox.delivered(tag)
    outbox.ack(1)
    outbox.reject(2, requeue=True)
    await turn()
    [write] = channel.writes()
    assert kinds(write) == ["Reject", "Ack"]
    assert (write[0].delivery_tag, write[0].requeue) == (2, True)
    assert (write[1].delivery_tag, write[1].multiple) == (1, True)  # not 2: it was rejected

    outbox.ack(3)
    await turn()
    [[ack]] = channel.writes()
    assert ack.delivery_tag == 3


async def test_a_large_reply_is_split_into_frames_the_connection_allows() -> None:
    channel = StandInChannel(max_content_size=1000)
    outbox = outbox_on(channel)
    body = bytes(range(256)) * 10  # 2560 bytes
    outbox.publish("reply-q", body, reply_props("big"))
    await turn()
    [write] = channel.writes()
    assert kinds(write) == ["Publish", "ContentHeader"] + ["ContentBody"] * 3
    assert write[1].body_size == len(body)
    assert b"".join(f.value for f in write[2:]) == body


async def test_nothing_is_written_to_a_closed_channel() -> None:
    channel = StandInChannel()
    outbox = outbox_on(channel)
    outbox.delivered(1)
    channel.is_closed = True  # the connection dropped: the broker redelivers tag 1 anyway
    outbox.publish("reply-q", b"late", reply_props("1"))
    outbox.ack(1)
    await turn()
    assert channel.writes() == []


async def test_a_full_frame_queue_delays_the_write_but_keeps_its_order() -> None:
    channel = StandInChannel(write_queue=asyncio.Queue(maxsize=1))
    outbox = outbox_on(channel)
    channel.write_queue.put_nowait(ChannelFrame.marshall(
        channel_number=CHANNEL, frames=[Basic.Qos(prefetch_count=1)]))
    outbox.delivered(1)
    outbox.ack(1)
    await turn()
    assert channel.write_queue.qsize() == 1  # the ack waits for room

    first = channel.write_queue.get_nowait()  # the connection's writer takes the older frame
    await turn()
    assert kinds([frame.unmarshal(first.payload)[2]]) == ["Qos"]
    [[ack]] = channel.writes()
    assert ack.delivery_tag == 1
