"""The protocol contract's shared checks (facade/protocol.py): the one version parser, read by the
front (a predict path), the v1 body and the FastAPI routes (``facade.routing.Version``); and
each protocol object's answers (facade/v1_protocol.py, facade/v2_protocol.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from common.errors import InvalidInput, ModelNotFound, Overloaded
from facade.errors import HttpError
from facade.protocol import HttpProtocol, parse_version, version_of
from facade.routing import Version
from facade.v1_protocol import V1, V1Call
from facade.v2_protocol import V2, V2Call, V2Response

NOT_AN_INTEGER = "Input should be a valid integer"
UNPARSED = "Input should be a valid integer, unable to parse string as an integer"
BELOW_ONE = "Input should be greater than or equal to 1"

REFUSED = [
    ("0", BELOW_ONE), ("-3", BELOW_ONE), (0, BELOW_ONE), (-3, BELOW_ONE),
    ("two", UNPARSED), ("1.5", UNPARSED), ("²", UNPARSED), ("\u0661", UNPARSED), ("+3", UNPARSED),
    (" 3", UNPARSED), ("1_0", UNPARSED), ("", UNPARSED), ("9" * 5000, UNPARSED),
    (True, NOT_AN_INTEGER), (False, NOT_AN_INTEGER), (1.5, NOT_AN_INTEGER),
    (2.0, NOT_AN_INTEGER), ([1], NOT_AN_INTEGER), (None, NOT_AN_INTEGER),
]


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("1", 1), ("07", 7), (12, 12),
                                                 ("99999999999999999999", 10**20 - 1)])
def test_a_version_is_an_integer_or_ascii_digits_from_1(value: object, expected: int) -> None:
    assert parse_version(value) == expected


@pytest.mark.parametrize(("value", "says"), REFUSED, ids=lambda v: repr(v)[:20])
def test_anything_else_is_refused_saying_why(value: object, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_version(value)
    assert str(info.value) == says
    with pytest.raises(InvalidInput) as refused:
        version_of(value, "path.version")
    assert refused.value.message == f"path.version: {says}"


class Ref(BaseModel):
    version: Version | None = None


@pytest.mark.parametrize(("value", "says"), [r for r in REFUSED if r[0] is not None],
                         ids=lambda v: repr(v)[:20])
def test_the_fastapi_type_refuses_the_same_with_its_location(value: object, says: str) -> None:
    """What the FastAPI handler turns into ``version: ...`` (v1 422, v2 400)."""
    with pytest.raises(ValidationError) as info:
        Ref(version=value)  # type: ignore[arg-type]
    [error] = info.value.errors()
    assert (error["loc"], error["msg"]) == (("version",), says)
    assert Ref(version="3").version == 3 and Ref().version is None  # type: ignore[arg-type]
    assert Ref.model_json_schema()["properties"]["version"]["anyOf"][0] == {
        "type": "integer", "minimum": 1}


@pytest.mark.parametrize("version", ["0", 0, -3, "two", True, "1.5", "²"])
def test_the_v1_body_version_is_read_by_the_same_parser(version: object) -> None:
    call = V1Call(orjson.dumps({"inputs": {}, "version": version}))
    with pytest.raises(InvalidInput, match=r"^version: Input should be"):
        call.parse()


def test_a_v1_body_version_of_digits_is_taken() -> None:
    assert V1Call(b'{"inputs": {}, "version": "2"}').parse() == (2, None)
    assert V1Call(b'{"inputs": {}, "version": 3}').parse() == (3, None)


def test_v1_answers_json_and_refuses_in_its_format() -> None:
    assert V1.answer(b'{"model":"m"}') == (200, b'{"model":"m"}',
                                           ((b"content-type", b"application/json"),))
    status, body, headers = V1.refuse(InvalidInput("bad x"))
    assert (status, orjson.loads(body)) == (422, {"error": {"code": "invalid_input",
                                                            "message": "bad x"}})
    assert list(headers) == [(b"content-type", b"application/json")]
    assert isinstance(V1.call(b"{}", [(b"inference-header-content-length", b"2")]), V1Call)


def test_v2_answers_json_or_binary_and_refuses_in_its_format() -> None:
    assert V2.answer(V2Response(b"{}", None))[2] == ((b"content-type", b"application/json"),)
    assert V2.answer(V2Response(b'{"a":1}\x00', 7)) == (200, b'{"a":1}\x00', (
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"7")))
    status, body, _ = V2.refuse(InvalidInput("bad x"))
    assert (status, orjson.loads(body)) == (400, {"error": "bad x"})
    assert V2.refuse(ModelNotFound("no"))[0] == 404


def test_v2_reads_the_header_length_from_the_headers() -> None:
    header = b'{"inputs": []}'
    call = V2.call(header + b"\x00", [(b"x-other", b"1"),
                                      (b"inference-header-content-length", b"14")])
    assert isinstance(call, V2Call)
    call.parse()  # the header length splits the body: the JSON is the first 14 bytes
    with pytest.raises(InvalidInput, match="not valid JSON"):
        V2.call(header + b"\x00", []).parse()


@pytest.mark.parametrize("protocol", [V1, V2], ids=lambda p: p.name)
def test_an_errors_headers_come_with_its_answer(protocol: HttpProtocol[Any]) -> None:
    assert (b"retry-after", b"1") in protocol.refuse(Overloaded("full"))[2]
    allow = ((b"allow", b"POST"),)
    assert allow[0] in protocol.refuse(HttpError(405, "Method Not Allowed", allow))[2]
