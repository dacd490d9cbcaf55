"""HTTP content codings: request bodies sent with ``Content-Encoding: gzip`` or ``deflate``
(tritonclient's ``request_compression_algorithm``) and predict answers compressed for a client
whose ``Accept-Encoding`` asks.

A request body is inflated before anything reads it (v2's ``Inference-Header-Content-Length``
counts the inflated body), never past the body limit: a gzip bomb is a 413 after ``limit`` bytes
of output, not an out-of-memory kill. An answer is compressed only from
``INFERNO_COMPRESS_MIN_BYTES`` on: on a fast network a small body costs more to compress than to
send.
"""

from __future__ import annotations

import zlib

from common.errors import InvalidJson, PayloadTooLarge, UnsupportedEncoding

__all__ = ["COMPRESS_LEVEL", "accepted_coding", "compress", "inflate"]

_WBITS = {b"gzip": zlib.MAX_WBITS | 16, b"x-gzip": zlib.MAX_WBITS | 16,
          b"deflate": zlib.MAX_WBITS}
"""zlib's window bits per coding: gzip's header and trailer, or zlib's (HTTP's "deflate")."""
_PREFERRED = (b"gzip", b"deflate")
COMPRESS_LEVEL = 1
"""Fast: a compressed answer is for a slow link, where level 1 already saves most bytes."""


def inflate(body: bytes, coding: bytes, limit: int) -> bytes:
    """``body`` decoded from ``coding`` (``identity`` leaves it); 415 for a coding this server
    does not read, 400 for a stream that is corrupt or cut short, 413 past ``limit`` bytes."""
    coding = coding.strip().lower()
    if coding in (b"", b"identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise UnsupportedEncoding(f"Content-Encoding {coding.decode('latin-1')!r} is not "
                                  f"supported; use gzip, deflate or identity")
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidJson(f"The {coding.decode()} body cannot be decoded ({exc})") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"The {coding.decode()} body inflates past the limit of "
                              f"{limit} bytes")
    if not inflater.eof:
        raise InvalidJson(f"The {coding.decode()} body is cut short")
    return inflated


def accepted_coding(accept: bytes) -> bytes | None:
    """The coding to answer in for an ``Accept-Encoding`` value, or ``None`` (send it as it
    is); a coding given ``q=0`` is refused."""
    weights: dict[bytes, float] = {}
    for item in accept.lower().split(b","):
        name, _, params = item.partition(b";")
        quality = 1.0
        key, _, value = params.strip().partition(b"=")
        if key == b"q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        weights[name.strip()] = quality
    wildcard = weights.get(b"*", 0.0)
    for coding in _PREFERRED:
        if weights.get(coding, wildcard) > 0:
            return coding
    return None


def compress(body: bytes, coding: bytes) -> bytes:
    """``body`` in ``coding`` (one of those ``accepted_coding`` returns)."""
    deflater = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _WBITS[coding])
    return deflater.compress(body) + deflater.flush()
