"""The ASGI front (facade/front.py) on its own: which requests it answers through the data plane,
which it hands to FastAPI, the request id, the body limit and the error mapping.

The seams: a recording ``DataPlane`` subclass (what the front asked of the data plane, and a
scripted answer or error) and a plain ASGI app standing for FastAPI behind the front.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from common.errors import DeadlineExceeded, InfernoError, InvalidInput, ModelNotFound
from common.metrics import FacadeMetrics
from common.model.config import ModelConfig
from common.model.repository import ModelRepository
from common.settings import FacadeSettings
from common.state.memory import InMemoryStateStore
from common.transport.memory import InMemoryBroker
from facade.cluster_view import ClusterView
from facade.data_plane import DataPlane
from facade.front import PREDICT_ROUTES, Front, PredictRoute
from facade.protocol import Answer, Headers, ProtocolCall
from facade.v1_protocol import V1Call
from facade.v2_protocol import V2Call, V2Response
from tests.unit.conftest import SAMPLE_MODELS

MAX_BODY = 1000


class RecordingPlane(DataPlane):
    """Answers every call with ``answer`` (or raises ``error``) and records what it was asked."""

    def __init__(self) -> None:
        metrics = FacadeMetrics(CollectorRegistry())
        view = ClusterView(InMemoryStateStore(), ModelRepository(SAMPLE_MODELS), metrics, 1, 1)
        super().__init__(FacadeSettings(), InMemoryBroker(), view, metrics)
        self.calls: list[tuple[str, int | None, ProtocolCall[Any], str]] = []
        self.answer: Any = b'{"ok":true}'
        self.error: Exception | None = None

    async def infer(self, model: str, pinned: int | None, call: ProtocolCall[Any],
                    request_id: str = "") -> Any:
        self.calls.append((model, pinned, call, request_id))
        if self.error is not None:
            raise self.error
        return self.answer


class Behind:
    """The ASGI app behind the front (FastAPI in the facade): answers 200 with what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"behind"})


@pytest.fixture
def plane() -> RecordingPlane:
    return RecordingPlane()


@pytest.fixture
def behind() -> Behind:
    return Behind()


@pytest.fixture
async def client(plane: RecordingPlane, behind: Behind) -> httpx.AsyncClient:
    front = Front(behind, plane, max_body_bytes=MAX_BODY, access_log=True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://front")


@pytest.mark.parametrize(("path", "model", "pinned", "call"), [
    ("/v1/models/mlp:predict", "mlp", None, V1Call),
    ("/v1/models/mlp/versions/2:predict", "mlp", 2, V1Call),
    ("/v1/models/a-b_c9:predict", "a-b_c9", None, V1Call),
    ("/v2/models/mlp/infer", "mlp", None, V2Call),
    ("/v2/models/mlp/versions/12/infer", "mlp", 12, V2Call),
])
async def test_predict_paths_go_to_the_data_plane(
        client: httpx.AsyncClient, plane: RecordingPlane, behind: Behind, path: str, model: str,
        pinned: int | None, call: type) -> None:
    if call is V2Call:
        plane.answer = V2Response(b'{"v2":1}', None)
    response = await client.post(path, content=b"{}")
    assert response.status_code == 200
    assert [(m, p, type(c)) for m, p, c, _ in plane.calls] == [(model, pinned, call)]
    assert behind.seen == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"),
    ("POST", "/v1/models:load"),
    ("POST", "/v1/models/mlp/versions/2/x:predict"),
    ("POST", "/v2/models/mlp/infer/more"),
    ("GET", "/health/ready"),
])
async def test_everything_else_goes_to_the_app_behind(
        client: httpx.AsyncClient, plane: RecordingPlane, behind: Behind, method: str,
        path: str) -> None:
    response = await client.request(method, path, content=b"body" if method == "POST" else None)
    assert response.text == "behind"
    assert behind.seen == [(method, path, b"body" if method == "POST" else b"")]
    assert plane.calls == []


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/v1/models/mlp:predict", 405, "Method Not Allowed"),
    ("PUT", "/v2/models/mlp/versions/1/infer", 405, "Method Not Allowed"),
    ("POST", "/v1/models/mlp/versions/0:predict", 422,
     "path.version: Input should be greater than or equal to 1"),
    ("POST", "/v2/models/mlp/versions/-3/infer", 400,
     "failed to get model version from specified version string '-3': "
     "path.version: Input should be greater than or equal to 1"),
    ("POST", "/v1/models/mlp/versions/two:predict", 422,
     "path.version: Input should be a valid integer, unable to parse string as an integer"),
    ("POST", "/v1/models/mlp/versions/1.5:predict", 422,
     "path.version: Input should be a valid integer, unable to parse string as an integer"),
    ("POST", "/v1/models/mlp/versions/+3:predict", 422,
     "path.version: Input should be a valid integer, unable to parse string as an integer"),
    ("POST", "/v2/models/mlp/versions/1_0/infer", 400,
     "failed to get model version from specified version string '1_0': "
     "path.version: Input should be a valid integer, unable to parse string as an integer"),
    ("POST", "/v2/models/mlp/versions/%C2%B2/infer", 400,
     "failed to get model version from specified version string '²': "
     "path.version: Input should be a valid integer, unable to parse string as an integer"),
])
async def test_a_predict_path_refuses_other_methods_and_bad_versions(
        client: httpx.AsyncClient, plane: RecordingPlane, behind: Behind, method: str,
        path: str, status: int, message: str) -> None:
    """As FastAPI's routes refuse them (405 with Allow, the path parameter's message; v2 with
    Triton's phrase first)."""
    response = await client.request(method, path, content=b"{}")
    assert response.status_code == status
    error = response.json()["error"]
    assert (error if path.startswith("/v2") else error["message"]) == message
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert plane.calls == [] and behind.seen == []


async def test_the_request_id_is_echoed_or_made(client: httpx.AsyncClient,
                                                plane: RecordingPlane) -> None:
    given = await client.post("/v1/models/mlp:predict", content=b"{}",
                              headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    assert plane.calls[-1][3] == "abc-123"
    made = {(await client.post("/v1/models/mlp:predict", content=b"{}")).headers["x-request-id"]
            for _ in range(3)}
    assert len(made) == 3, "each request gets an id of its own"
    assert (await client.get("/health/live")).headers["x-request-id"]


async def test_the_v2_binary_answer_carries_its_header_length(
        client: httpx.AsyncClient, plane: RecordingPlane) -> None:
    plane.answer = V2Response(b'{"outputs":[]}\x00\x01', 14)
    response = await client.post("/v2/models/mlp/infer", content=b"{}",
                                 headers={"inference-header-content-length": "2"})
    assert response.headers["inference-header-content-length"] == "14"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b'{"outputs":[]}\x00\x01'


@pytest.mark.parametrize(("path", "error", "status", "body"), [
    ("/v1/models/mlp:predict", InvalidInput("bad x"), 422,
     {"error": {"code": "invalid_input", "message": "bad x"}}),
    ("/v2/models/mlp/infer", InvalidInput("bad x"), 400, {"error": "bad x"}),
    ("/v1/models/nope:predict", ModelNotFound("no nope"), 404,
     {"error": {"code": "model_not_found", "message": "no nope"}}),
    ("/v2/models/mlp/infer", DeadlineExceeded("late"), 504, {"error": "late"}),
    ("/v1/models/mlp:predict", KeyError("x"), 500,
     {"error": {"code": "internal", "message": "Internal error: KeyError"}}),
    ("/v2/models/mlp/infer", ZeroDivisionError(), 500,
     {"error": "Internal error: ZeroDivisionError"}),
])
async def test_errors_map_to_each_protocols_status_and_body(
        client: httpx.AsyncClient, plane: RecordingPlane, path: str, error: Exception,
        status: int, body: dict[str, Any]) -> None:
    plane.error = error
    response = await client.post(path, content=b"{}")
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/v1/models/mlp:predict", "/v1/models:load"])
async def test_a_body_over_the_limit_by_content_length_is_413_before_reading(
        client: httpx.AsyncClient, plane: RecordingPlane, behind: Behind, path: str) -> None:
    response = await client.post(path, content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert plane.calls == [] and behind.seen == []


async def test_a_chunked_body_over_the_limit_is_413_while_reading(plane: RecordingPlane,
                                                                  behind: Behind) -> None:
    front = Front(behind, plane, max_body_bytes=MAX_BODY, access_log=False)
    chunks = [b"x" * 600, b"x" * 600, b"never read"]
    read: list[bytes] = []
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = chunks.pop(0)
        read.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/models/mlp:predict",
             "headers": [(b"transfer-encoding", b"chunked")]}
    await front(scope, receive, send)
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"
    assert len(read) == 2, "reading stops at the chunk that crosses the limit"
    assert plane.calls == []


async def test_one_access_log_line_per_request(client: httpx.AsyncClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inferno.access"):
        await client.post("/v1/models/mlp:predict", content=b"{}",
                          headers={"x-request-id": "r1"})
        await client.get("/health/live")
    lines = [(r.getMessage(), r.request_id, r.status) for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "inferno.access"]
    assert lines[0] == ("POST /v1/models/mlp:predict 200", "r1", 200)
    assert lines[1][0] == "GET /health/live 200" and len(lines) == 2


def test_every_predict_route_is_matched_by_its_own_pattern() -> None:
    for route in PREDICT_ROUTES:
        path = route.path.replace("{name}", "m").replace("{version}", "3")
        match = route.pattern.match(path)
        assert match is not None, route.path
        assert match.groups() == (("m", "3") if "{version}" in route.path else ("m",))


@dataclass
class ToyCall:
    """What the toy protocol hands the data plane (the recording plane only keeps it)."""

    body: bytes
    headers: Headers
    route = "toy"

    def parse(self) -> tuple[int | None, float | None]:
        return None, None

    def decode(self, config: ModelConfig) -> tuple[dict[str, Any], list[str] | None]:
        return {}, None

    def encode(self, config: ModelConfig, outputs: dict[str, Any]) -> bytes:
        return b""


class Toy:
    """A protocol the front has never heard of: text in, text out, errors as text with 418."""

    name = "toy"
    _TEXT = ((b"content-type", b"text/plain"),)

    def call(self, body: bytes, headers: Headers) -> ToyCall:
        return ToyCall(body, headers)

    def answer(self, result: bytes) -> Answer:
        return 201, result, self._TEXT

    def refuse(self, error: InfernoError) -> Answer:
        return 418, error.message.encode(), self._TEXT


async def test_a_new_protocol_is_an_object_and_a_row_of_the_route_table(
        plane: RecordingPlane, behind: Behind) -> None:
    """The front makes the call, writes the answer and the errors as the protocol says."""
    routes = (*PREDICT_ROUTES, PredictRoute("/toy/{name}/go", Toy(), "A toy"))
    front = Front(behind, plane, max_body_bytes=MAX_BODY, access_log=False, routes=routes)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://front")
    plane.answer = b"hello"
    response = await client.post("/toy/mlp/go", content=b"hi", headers={"x-toy": "1"})
    assert (response.status_code, response.text) == (201, "hello")
    assert response.headers["content-type"] == "text/plain" and response.headers["x-request-id"]
    [(model, pinned, call, _)] = plane.calls
    assert isinstance(call, ToyCall) and (model, pinned, call.body) == ("mlp", None, b"hi")
    assert (b"x-toy", b"1") in call.headers
    plane.error = ModelNotFound("no mlp")
    refused = await client.post("/toy/mlp/go", content=b"hi")
    assert (refused.status_code, refused.text) == (418, "no mlp")
    too_large = await client.post("/toy/mlp/go", content=b"x" * (MAX_BODY + 1))
    assert too_large.status_code == 418 and "exceeds the limit" in too_large.text
    assert (await client.get("/toy/mlp/go")).status_code == 418  # 405, in the toy's words
    assert (await client.post("/toy/mlp/other")).text == "behind"
    v1 = await client.post("/v1/models/mlp:predict", content=b"{}")
    assert v1.json()["error"]["code"] == "model_not_found", "v1 keeps its own error format"
