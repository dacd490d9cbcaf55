"""The aiormq and pamqp internals Inferno relies on, in one place, checked at start-up.

The worker's ``Outbox`` (outbox.py) writes a channel's replies, rejections and
acks as one frame set per event-loop turn. aiormq's public API cannot: each ``basic_publish`` and
``basic_ack`` is a write of its own, and a publish a task. So the frames are built here with
pamqp and handed to the connection's writer directly, which relies on exactly this, beyond
aiormq's public API:

- an ``aiormq.Channel``'s ``number`` (the channel id every frame carries), ``is_closed``,
  ``max_content_size`` (how many body bytes one content frame may hold, from the connection's
  ``frame_max``) and ``write_queue`` (the connection's queue of marshalled frames, written to the
  socket in order);
- ``aiormq.abc.ChannelFrame.marshall(channel_number=, frames=)``: frames into one payload;
- pamqp's frames ``Basic.Publish(routing_key=)``, ``ContentHeader(body_size=, properties=)``,
  ``ContentBody(value)``, ``Basic.Ack(delivery_tag=, multiple=)`` and
  ``Basic.Reject(delivery_tag=, requeue=)``.

``check_internals()`` looks for each of them on the classes, without a connection, and names the
installed aiormq version and what is missing; ``AmqpBroker.start()`` calls it before connecting,
so that an aiormq release that moved one of them fails at start-up, not mid-request. pyproject.toml
bounds aiormq and pamqp to the major versions this was written and tested against.
"""

from __future__ import annotations

import asyncio
import dis
import inspect
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace

import aiormq
from aiormq.abc import ChannelFrame, FrameType
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

__all__ = [
    "INSTALLED",
    "Frame",
    "UnsupportedAiormq",
    "ack_frame",
    "channel_number",
    "check_internals",
    "is_closed",
    "publish_frames",
    "reject_frame",
    "write",
]

Frame = FrameType
"""One frame of a channel's write (a method, a content header or a content body)."""

INSTALLED = SimpleNamespace(Channel=aiormq.Channel, ChannelFrame=ChannelFrame, Basic=Basic,
                            ContentHeader=ContentHeader, ContentBody=ContentBody)
"""What ``check_internals`` inspects by default: the installed classes."""

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Channel": ("number", "is_closed", "max_content_size", "write_queue"),
    "ChannelFrame": ("marshall",),
}
"""Members the functions below read, by the class (in ``INSTALLED``) that holds them."""

PARAMETERS: dict[str, tuple[str, ...]] = {
    "ChannelFrame.marshall": ("channel_number", "frames"),
    "Basic.Publish": ("routing_key",),
    "ContentHeader": ("body_size", "properties"),
    "ContentBody": ("value",),
    "Basic.Ack": ("delivery_tag", "multiple"),
    "Basic.Reject": ("delivery_tag", "requeue"),
}
"""Keyword parameters the functions below pass, by the callable (in ``INSTALLED``) taking them."""


class UnsupportedAiormq(RuntimeError):
    """The installed aiormq/pamqp lack an internal this module relies on."""


def check_internals(library: object = INSTALLED, aiormq_version: str | None = None) -> None:
    """Raise ``UnsupportedAiormq`` naming the aiormq version and every member of ``library``
    (by default the installed classes, ``INSTALLED``) that this module relies on and that is
    missing."""
    missing = [f"{owner}.{name}" for owner, names in ATTRIBUTES.items()
               for name in names if not _has_attribute(_resolve(library, owner), name)]
    missing += [f"{owner}({name}=)" for owner, names in PARAMETERS.items()
                for name in names if not _takes(_resolve(library, owner), name)]
    if missing:
        found = aiormq_version or _installed_version("aiormq")
        raise UnsupportedAiormq(
            f"aiormq {found} (pamqp {_installed_version('pamqp')}) lacks what Inferno's worker "
            f"writes frames with (aiormq_frames.py): {', '.join(missing)}. "
            f"Install the aiormq and pamqp versions pyproject.toml names.")


def _resolve(library: object, dotted: str) -> object | None:
    found: object | None = library
    for part in dotted.split("."):
        found = getattr(found, part, None)
    return found


def _has_attribute(cls: object, name: str) -> bool:
    """A class attribute (method, property, slot) or one a constructor in the class's MRO
    assigns (``self.<name> = ...``): aiormq sets a channel's ``write_queue`` in ``__init__``."""
    if not isinstance(cls, type):
        return False
    if hasattr(cls, name):
        return True
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if inspect.isfunction(init) and any(
                op.opname == "STORE_ATTR" and op.argval == name
                for op in dis.get_instructions(init)):
            return True
    return False


def _takes(function: object, name: str) -> bool:
    if not callable(function):
        return False
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


# -- what the outbox calls ------------------------------------------------------------------------


def publish_frames(channel: aiormq.Channel, routing_key: str, body: bytes,
                   properties: Basic.Properties) -> list[Frame]:
    """A publish to the default exchange: method, header, and the body split into content
    frames of the size the connection allows."""
    size = channel.max_content_size
    return [Basic.Publish(routing_key=routing_key),
            ContentHeader(body_size=len(body), properties=properties),
            *(ContentBody(body[i:i + size]) for i in range(0, len(body), size))]


def ack_frame(tag: int, multiple: bool = False) -> Frame:
    return Basic.Ack(delivery_tag=tag, multiple=multiple)


def reject_frame(tag: int, requeue: bool) -> Frame:
    return Basic.Reject(delivery_tag=tag, requeue=requeue)


def is_closed(channel: aiormq.Channel) -> bool:
    return channel.is_closed


def channel_number(channel: aiormq.Channel) -> int:
    return channel.number


def write(channel: aiormq.Channel, frames: Iterable[Frame]) -> asyncio.Future[None] | None:
    """Queue ``frames`` for the connection's writer as one payload, behind what it holds already.

    ``None`` when queued at once; when the writer is behind, the write waits for room (in order)
    and this returns its future, which the caller must hold a strong reference to until done.
    """
    payload = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
    try:
        channel.write_queue.put_nowait(payload)
    except asyncio.QueueFull:
        return asyncio.ensure_future(channel.write_queue.put(payload))
    return None
