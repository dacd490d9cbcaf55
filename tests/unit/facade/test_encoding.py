"""Content codings (facade/encoding.py): which coding an ``Accept-Encoding`` asks for, and a
body inflated within the limit or refused with the right error. Over HTTP:
tests/v2/test_compression.py."""

from __future__ import annotations

import gzip
import zlib

import pytest

from common.errors import InvalidJson, PayloadTooLarge, UnsupportedEncoding
from facade.encoding import accepted_coding, compress, inflate


@pytest.mark.parametrize(("accept", "coding"), [
    (b"gzip", b"gzip"), (b"deflate", b"deflate"), (b"gzip, deflate", b"gzip"),
    (b"GZIP;q=0.5", b"gzip"), (b"gzip;q=0, deflate", b"deflate"), (b"*", b"gzip"),
    (b"*;q=0", None), (b"identity", None), (b"br", None), (b"gzip;q=zero", None), (b"", None)])
def test_the_coding_an_accept_encoding_asks_for(accept: bytes, coding: bytes | None) -> None:
    assert accepted_coding(accept) == coding


@pytest.mark.parametrize("coding", [b"gzip", b"deflate"])
def test_a_compressed_body_inflates_to_what_was_compressed(coding: bytes) -> None:
    body = b'{"inputs": {}}' * 100
    assert inflate(compress(body, coding), coding, len(body)) == body


def test_identity_and_the_standard_libraries_codings_are_read() -> None:
    assert inflate(b"{}", b"identity", 10) == b"{}"
    assert inflate(gzip.compress(b"{}"), b" GZip ", 10) == b"{}"
    assert inflate(zlib.compress(b"{}"), b"deflate", 10) == b"{}"


def test_a_body_past_the_limit_once_inflated_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="inflates past the limit of 99 bytes"):
        inflate(gzip.compress(b" " * 100), b"gzip", 99)


def test_a_corrupt_or_cut_stream_is_400_and_another_coding_415() -> None:
    with pytest.raises(InvalidJson, match="cannot be decoded"):
        inflate(b"plain text", b"gzip", 100)
    with pytest.raises(InvalidJson, match="cut short"):
        inflate(gzip.compress(b"{}" * 50)[:-8], b"gzip", 1000)
    with pytest.raises(UnsupportedEncoding, match="'br' is not supported"):
        inflate(b"", b"br", 100)
