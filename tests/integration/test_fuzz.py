"""Fuzzing the facade against its own OpenAPI (v1 and v2) with schemathesis, in process.

The app under test is ``Facade.app``, the ASGI app the server serves (the predict fast path of
``facade.front`` included), over the real in-memory broker and store with the sample models of
models/ loaded and both bearer tokens set. The schema is the one the facade serves at
``/openapi.json``. For every documented operation schemathesis generates requests, positive
(schema-valid) and negative (schema-violating), and the answer must be no 5xx but a documented
503 or 504, with a documented status code, content type, headers and body; a schema-violating
request must be refused (4xx).

Path parameters are pinned to the sample models' names and versions, with an unknown name and
version among them, so the fuzzer reaches the model logic and not only 404s; in positive mode
the admin bodies get pinned names too, and predict bodies are also built from the sample
models' signatures, so requests reach the worker.

Bounded and deterministic: ``INFERNO_FUZZ_EXAMPLES`` examples per operation and mode (default
100: 25-70 s on the 2-core CI machine), derandomized; raise it to fuzz longer.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation, BaseSchema
from starlette.types import Receive, Scope, Send

from common.settings import FacadeSettings, WorkerSettings
from inferno.embedded import Embedded

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("INFERNO_FUZZ_EXAMPLES", "100"))

# The sample models and their versions, and names and versions that do not exist.
NAMES = ["mlp", "bag", "vision", "nope"]
VERSIONS = [1, 2, 3]
ADMIN = ("/v1/models:", "/v2/repository/")
API_TOKEN, ADMIN_TOKEN = "fuzz-api-token", "fuzz-admin-token"
# Most cases carry the admin token (accepted on every guarded route), some the API token (a 401
# on admin calls), some none (a 401 wherever a token is needed).
TOKENS = [ADMIN_TOKEN, ADMIN_TOKEN, ADMIN_TOKEN, API_TOKEN, None]

# 503 (overloaded, a version still loading) and 504 (a deadline) are documented answers, not
# server errors; every other 5xx fails the run.
CONFIG = SchemathesisConfig.from_dict({"checks": {"not_a_server_error": {
    "expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}}})


class Served:
    """``Facade.app`` of an embedded server that starts on the ASGI lifespan.

    schemathesis runs the app on an event loop of its own (a thread), so the server must start on
    that loop: the lifespan is the hook it gives. Every other scope goes to ``Facade.app`` as is.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.embedded: Embedded | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            assert self.embedded is not None
            await self.embedded.facade.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.embedded = await Embedded.start(
                    FacadeSettings(repo_root=self.repo, access_log=False, gc_freeze=False,
                                   heartbeat_interval_s=0.5, admin_timeout_s=10,
                                   api_token=API_TOKEN, admin_token=ADMIN_TOKEN),
                    WorkerSettings(repo_root=self.repo, preload=["*"], device="cpu",
                                   heartbeat_interval_s=0.5, drain_timeout_s=5,
                                   gc_freeze=False))
                assert await self.embedded.wait_ready(30), "the sample models did not come up"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.embedded is not None:
                    await self.embedded.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    repo = tmp_path_factory.mktemp("fuzz") / "repo"
    shutil.copytree(ROOT / "models", repo, ignore=shutil.ignore_patterns("__pycache__"))
    loaded = schemathesis.openapi.from_asgi("/openapi.json", Served(repo), config=CONFIG)
    yield loaded
    asgi.shutdown_lifespans()


def cases(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """The operation's cases with path parameters drawn from the pinned names and versions. In
    positive mode the admin bodies (``{"name", "version"}``) also get pinned names, and predict
    bodies built from the sample models' signatures (valid or nearly: random rows, lengths,
    values, outputs, codecs) reach the worker."""
    keys = [p.name for p in operation.path_parameters]
    pinned = st.fixed_dictionaries({k: st.sampled_from(NAMES if k == "name" else VERSIONS)
                                    for k in keys})
    strategy = pinned.flatmap(lambda path: operation.as_strategy(
        generation_mode=mode, path_parameters=path or None))
    if mode is not GenerationMode.POSITIVE:
        return strategy
    if operation.path.startswith("/v1/models:"):
        bodies = st.fixed_dictionaries({"name": st.sampled_from(NAMES)},
                                       optional={"version": st.sampled_from(VERSIONS)})
        strategy |= bodies.flatmap(lambda body: operation.as_strategy(
            generation_mode=mode, body=body))
    elif operation.path.endswith((":predict", "/infer")):
        protocol = "v2" if operation.path.endswith("/infer") else "v1"
        model = st.sampled_from(["mlp", "bag"])
        strategy |= st.tuples(model, st.sampled_from(VERSIONS)).flatmap(
            lambda mv: predict_body(mv[0], protocol).flatmap(
                lambda body: operation.as_strategy(
                    generation_mode=mode, body=body, media_type="application/json",
                    path_parameters={"name": mv[0], "version": mv[1]} if "version" in keys
                    else {"name": mv[0]})))
    return strategy


@st.composite
def predict_body(draw: st.DrawFn, model: str, protocol: str) -> dict[str, Any]:
    """A predict body for a sample model: its inputs, with rows (0 to 3: 0 is refused), lengths
    and values drawn, sometimes a dimension off."""
    rows, seq = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    width = draw(st.sampled_from([256, 256, 256, 255]))
    finite = st.floats(-1e6, 1e6, width=32)
    if model == "mlp":
        inputs = {"x": ("FP32", [rows, width], draw(st.lists(
            st.lists(finite, min_size=width, max_size=width), min_size=rows, max_size=rows)))}
        outputs = ["probs", "label", "logits", "nope"]
    else:
        inputs = {
            "tokens": ("INT64", [rows, seq], draw(st.lists(st.lists(
                st.integers(-2**63, 2**63 - 1), min_size=seq, max_size=seq), min_size=rows,
                max_size=rows))),
            "mask": ("BOOL", [rows, seq], draw(st.lists(st.lists(
                st.booleans(), min_size=seq, max_size=seq), min_size=rows, max_size=rows)))}
        outputs = ["sum", "count", "mean", "nope"]
    wanted = draw(st.none() | st.lists(st.sampled_from(outputs), max_size=2))
    if protocol == "v1":
        body: dict[str, Any] = {"inputs": {n: {"data": d} for n, (_, _, d) in inputs.items()}}
        if wanted is not None:
            body["outputs"] = wanted
        body |= draw(st.fixed_dictionaries({}, optional={
            "codec": st.sampled_from(["json", "base64"]),
            "timeout_ms": st.sampled_from([0.001, 5000])}))
        return body
    flat = [{"name": n, "datatype": t, "shape": shape,
             "data": [v for row in d for v in row]} for n, (t, shape, d) in inputs.items()]
    body = {"inputs": flat,
            "parameters": {"binary_data_output": draw(st.booleans())}}
    if wanted is not None:
        body["outputs"] = [{"name": n} for n in wanted]
    return body


# schemathesis's response checks, all but positive_data_acceptance: a body the schema accepts
# is still refused (422, v2 400) when it does not fit the model's signature, which no schema of
# the predict body can say, and a v2 readiness probe answers 400 for "not ready".
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance, checks.negative_data_rejection,
          checks.missing_required_header, checks.unsupported_method, checks.ignored_auth]


def activate_the_samples(api_schema: BaseSchema) -> None:
    """Each sample model loaded and active, as the server started: the admin calls of an
    earlier run unloaded some."""
    with asgi.get_client(api_schema.app) as client:
        for name, version in (("mlp", 2), ("bag", 1), ("vision", 1)):
            response = client.post("/v1/models:activate", json={"name": name, "version": version},
                                   headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            assert response.status_code == 200, response.text


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_the_api_answers_as_documented(api_schema: BaseSchema, mode: GenerationMode) -> None:
    activate_the_samples(api_schema)
    failures: list[str] = []
    seen: Counter[str] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # The admin calls last: they unload what the others need loaded.
    for operation in sorted(operations, key=lambda op: op.path.startswith(ADMIN)):

        @given(case=cases(operation, mode), token=st.sampled_from(TOKENS))
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.target])
        def fuzz(case: Case, token: str | None) -> None:
            headers = {"authorization": f"Bearer {token}"} if token else None
            response = case.call_and_validate(checks=CHECKS, headers=headers, timeout=60)
            seen[f"{case.operation.label} {response.status_code}"] += 1

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to break: pinned path, no body
        except (Exception, FailureGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    print("\n".join(f"{k}: {v}" for k, v in sorted(seen.items())))  # shown with -s
    assert not failures, "\n\n".join(failures)
    if mode is GenerationMode.POSITIVE:  # the pinning works: predict reached the models
        assert seen["POST /v1/models/{name}:predict 200"], seen
        assert seen["POST /v2/models/{name}/infer 200"], seen
