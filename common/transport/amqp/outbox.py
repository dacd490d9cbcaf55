"""What one worker channel owes the broker, written once per event-loop turn.

The AMQP consumer (consumer.py) hands each channel's replies, rejections
and acknowledgements to its ``Outbox``; at the end of the turn they leave as one frame set, in
order. The frames are built and written by aiormq_frames.py, the one module that
touches aiormq's internals.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
from pamqp.commands import Basic

from common.transport.amqp import aiormq_frames
from common.transport.amqp.aiormq_frames import Frame

__all__ = ["Outbox"]

log = logging.getLogger(__name__)


class Outbox:
    """What one protocol channel owes the broker, written once per event-loop turn.

    A batch's replies, its rejections and one ``ack(multiple=True)`` leave in one write (one
    frame set, one syscall, one wake-up of the broker) instead of one per message. Tags are handed
    out in increasing order and ``ack(multiple=True)`` of tag *t* acknowledges every outstanding
    tag up to *t*, so it covers only the prefix that is wholly settled; deliveries settled behind
    an older one still in flight (batches run concurrently and finish out of order) get an ack of
    their own in the same write, so a slow batch never holds the prefetch window. A rejection
    goes in its own frame, written before any ack that spans its tag. Replies are written before
    the ack of their request: one connection writes its frames in order.
    """

    __slots__ = ("_channel", "_flush_pending", "_frames", "_outstanding", "_writes")

    def __init__(self, channel: aiormq.Channel) -> None:
        self._channel = channel
        self._outstanding: dict[int, bool | None] = {}
        """Tag → ``None`` in flight, ``True`` settled by ack, ``False`` settled by reject."""
        self._frames: list[Frame] = []
        self._flush_pending = False
        self._writes: set[asyncio.Future[None]] = set()  # strong references to blocked writes

    @property
    def channel(self) -> aiormq.Channel:
        return self._channel

    def delivered(self, tag: int) -> None:
        self._outstanding[tag] = None

    def publish(self, routing_key: str, body: bytes, properties: Basic.Properties) -> None:
        self._frames += aiormq_frames.publish_frames(self._channel, routing_key, body, properties)
        self._schedule()

    def ack(self, tag: int) -> None:
        self._outstanding[tag] = True
        self._schedule()

    def reject(self, tag: int, requeue: bool) -> None:
        self._outstanding[tag] = False
        self._frames.append(aiormq_frames.reject_frame(tag, requeue))
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is owed now (normally at the end of the event-loop turn)."""
        self._flush_pending = False
        frames, self._frames = self._frames, []
        prefix_end = 0  # the last acked tag with nothing in flight before it
        behind: list[int] = []  # acked tags behind one in flight: acknowledged one by one
        in_flight = False
        for tag, acked in list(self._outstanding.items()):
            if acked is None:
                in_flight = True
                continue
            del self._outstanding[tag]  # settled: an ack below, or a rejection already framed
            if acked and in_flight:
                behind.append(tag)
            elif acked:
                prefix_end = tag
        if prefix_end:
            frames.append(aiormq_frames.ack_frame(prefix_end, multiple=True))
        frames += (aiormq_frames.ack_frame(tag) for tag in behind)
        if not frames:
            return
        if aiormq_frames.is_closed(self._channel):
            # The broker redelivers what it had not seen acknowledged.
            log.debug("channel %s closed: %d frames dropped",
                      aiormq_frames.channel_number(self._channel), len(frames))
            return
        write = aiormq_frames.write(self._channel, frames)
        if write is not None:  # the connection's writer is behind: the write waits, in order
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
