"""``scripts/load_test.py`` (Locust) against a live ``inferno serve`` process.

Locust runs as a subprocess: importing it monkey-patches the standard library for gevent, which
would break the asyncio tests sharing this process. Each run lasts a few seconds; its counts come
from ``--json-file`` (written once, at exit), the server's from its ``/metrics``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common.model.dtypes import DType
from common.model.signature import Signature, TensorSpec
from common.wire.json_request import decode_json_inputs
from tests.http import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "load_test.py"
DOCUMENTED = ["--model-name", "mlp", "--load-model", "--model-version", "2", "--warmup", "5",
              "--verify-response"]
"""The README's command, less its users and run time."""

# CI (INFERNO_REQUIRE_SERVICES=1) installs the load extra: there a missing Locust fails the tests.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None
    and os.environ.get("INFERNO_REQUIRE_SERVICES") != "1",
    reason="Locust is not installed (pip install -e '.[load]')")


@dataclass(frozen=True)
class Run:
    code: int
    requests: int
    failures: int
    output: str


def run_locust(host: str, tmp_path: Path, *args: str, users: int = 8, run_time: str = "5s",
               env: dict[str, str] | None = None) -> Run:
    """One headless Locust run of the script, in an environment without LOCUST_ or INFERNO_
    variables but ``env``; its totals from the JSON it writes at exit."""
    prefix = tmp_path / f"locust-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "locust", "-f", str(SCRIPT), "--headless", "-u", str(users),
               "-r", str(users), "--run-time", run_time, "--host", host, "--only-summary",
               "--exit-code-on-error", "1", "--json-file", str(prefix), *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "INFERNO_"))}
    done = subprocess.run(command, cwd=tmp_path, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    stats = Path(f"{prefix}.json")
    entries = json.loads(stats.read_text()) if stats.exists() else []
    return Run(done.returncode, sum(e["num_requests"] for e in entries),
               sum(e["num_failures"] for e in entries), output)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_http(process: subprocess.Popen[bytes], url: str, log: Path | None = None,
              timeout: float = 60) -> None:
    """Until ``url`` answers 200. Another process: no event to await, so poll (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, (log.read_text()[-3000:] if log
                                        else f"exited with {process.returncode}")
        try:
            if get_json(url)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 in {timeout}s"
        time.sleep(0.1)


def requests_total(base: str, model: str) -> float:
    """``infer_requests_total`` of one model, all routes, from the facade's /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("infer_requests_total{") and f'model="{model}"' in line)


def version_state(base: str, model: str, version: int) -> bool:
    status, body = get_json(f"{base}/v1/models/{model}")
    assert status == 200, body
    (entry,) = [v for v in body["versions"] if v["version"] == version]
    return bool(entry["loaded"]) and version in body["loaded"]


@contextlib.contextmanager
def serving(directory: Path, **env: str) -> Iterator[str]:
    """``inferno serve`` on a free port with the sample models, mlp 2 loaded (1 is not); its
    base URL once it is ready."""
    port = free_port()
    env = {**os.environ, "INFERNO_TORCH_THREADS": "1", "INFERNO_ACCESS_LOG": "false", **env}
    log = directory / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferno", "serve", "--port", str(port), "--grpc-port", "0",
             "--repo", str(ROOT / "models"), "--preload", "mlp"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(process, f"{base}/health/ready", log)
        yield base
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module's tests: none of them changes what is loaded."""
    with serving(tmp_path_factory.mktemp("serve")) as base:
        yield base


def test_the_documented_command_against_inferno_serve(served: str, tmp_path: Path) -> None:
    assert version_state(served, "mlp", 2)  # already loaded: the load must still succeed
    before = requests_total(served, "mlp")
    run = run_locust(served, tmp_path, *DOCUMENTED)
    assert run.code == 0, run.output[-3000:]
    assert run.requests > 0 and run.failures == 0, run.output[-3000:]
    assert version_state(served, "mlp", 2)
    # The server saw the counted requests and the five warm-up ones (and at most one in flight
    # per user when the run stopped).
    seen = requests_total(served, "mlp") - before
    assert run.requests + 5 <= seen <= run.requests + 5 + 8


def test_warm_up_requests_are_not_counted(served: str, tmp_path: Path) -> None:
    before = requests_total(served, "mlp")
    run = run_locust(served, tmp_path, "--warmup", "20", users=1, run_time="3s")
    assert run.code == 0, run.output[-3000:]
    seen = requests_total(served, "mlp") - before
    assert run.requests > 0
    assert 20 <= seen - run.requests <= 21, (seen, run.requests)


def test_an_invalid_payload_fails_every_request(served: str, tmp_path: Path) -> None:
    payload = tmp_path / "bad.json"
    payload.write_text(json.dumps({"inputs": {"x": {"data": [[0.5] * 3]}}}))  # 3 of 256
    run = run_locust(served, tmp_path, "--payload-file", str(payload), "--verify-response",
                     users=2, run_time="2s")
    assert run.code == 1, run.output[-3000:]
    assert run.requests > 0 and run.failures == run.requests


def test_a_failed_load_ends_the_run_before_any_request(served: str, tmp_path: Path) -> None:
    before = requests_total(served, "nope")
    run = run_locust(served, tmp_path, "--model-name", "nope", "--load-model",
                     "--verify-response", users=2, run_time="30s")
    assert run.code == 1
    assert "load test not started: --load-model" in run.output
    assert "model_not_found" in run.output
    assert run.requests == 0 and requests_total(served, "nope") == before


def test_a_failed_warm_up_ends_the_run(served: str, tmp_path: Path) -> None:
    # Version 1 exists and is not loaded: 404 model_not_loaded.
    run = run_locust(served, tmp_path, "--model-version", "1", "--warmup", "3", users=2,
                     run_time="30s")
    assert run.code == 1
    assert "warm-up request 1 of 3 failed: HTTP 404" in run.output, run.output[-3000:]
    assert run.requests == 0


def test_tokens_from_the_options_or_the_environment(tmp_path: Path) -> None:
    tokens = {"INFERNO_ADMIN_TOKEN": "adm1n", "INFERNO_API_TOKEN": "ap1"}
    with serving(tmp_path, **tokens) as base:
        refused = run_locust(base, tmp_path, *DOCUMENTED, users=2, run_time="30s")
        by_option = run_locust(base, tmp_path, *DOCUMENTED, "--admin-token", "adm1n",
                               "--api-token", "ap1", users=2, run_time="2s")
        by_env = run_locust(base, tmp_path, *DOCUMENTED, users=2, run_time="2s", env=tokens)
    assert refused.code == 1 and refused.requests == 0
    assert "answered HTTP 401" in refused.output
    for run in (by_option, by_env):
        assert run.code == 0, run.output[-3000:]
        assert run.requests > 0 and run.failures == 0


class _NoOutputs(BaseHTTPRequestHandler):
    """A server that answers every predict 200 with no output tensor."""

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"name": "mlp", "active": 2, "versions": [
            {"version": 2, "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4],
                                       "optional": False}]}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self._answer({"model": "mlp", "version": 2, "outputs": {}})

    def log_message(self, *args: Any) -> None:
        pass


def test_verify_response_fails_a_200_without_outputs(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoOutputs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        plain = run_locust(base, tmp_path, users=2, run_time="2s")
        checked = run_locust(base, tmp_path, "--verify-response", "--csv",
                             str(tmp_path / "checked"), users=2, run_time="2s")
    finally:
        server.shutdown()
        server.server_close()
    assert plain.code == 0 and plain.requests > 0 and plain.failures == 0, plain.output[-3000:]
    assert checked.code == 1
    assert checked.requests > 0 and checked.failures == checked.requests
    assert "response has no output tensor" in (tmp_path / "checked_failures.csv").read_text()


class _Silent(_NoOutputs):
    """A server that never answers a predict (until the test ends)."""

    released = threading.Event()

    def do_POST(self) -> None:
        self.released.wait(60)


def test_request_timeout_bounds_each_request(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        run = run_locust(base, tmp_path, "--request-timeout", "0.3", "--csv",
                         str(tmp_path / "silent"), users=2, run_time="2s")
    finally:
        _Silent.released.set()
        server.shutdown()
        server.server_close()
    # Each user waits 0.3 s per request: about 2 x 2 / 0.3 of them, each a timeout.
    assert run.code == 1
    assert 4 <= run.requests == run.failures <= 16, run
    assert "timed out" in (tmp_path / "silent_failures.csv").read_text().lower()


def test_the_built_payload_passes_validation_for_every_dtype() -> None:
    """Every dtype the server knows, fixed, symbolic and batch dimensions, and an optional input
    (left out); the metadata in the format ``GET /v1/models/{name}`` answers."""
    inputs = [TensorSpec(name=f"in_{d.value}", dtype=d, shape=["batch", 3, "seq"]) for d in DType]
    inputs.append(TensorSpec(name="extra", dtype=DType.FLOAT32, shape=["batch"], optional=True))
    signature = Signature(inputs=inputs, outputs=[
        TensorSpec(name="y", dtype=DType.FLOAT32, shape=["batch"])])
    metadata = {"version": 1, "inputs": [s.describe() for s in signature.inputs]}
    program = ("import json, runpy, sys; script = runpy.run_path(sys.argv[1]); "
               "print(json.dumps(script['build_payload'](json.loads(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", program, str(SCRIPT), json.dumps(metadata)],
                          capture_output=True, text=True, timeout=60, check=True)
    body = json.loads(done.stdout)
    assert set(body["inputs"]) == {f"in_{d.value}" for d in DType}
    arrays, outputs = decode_json_inputs(body, signature)
    checked = signature.validate_request(arrays, outputs, max_rows=1, model="all")
    assert checked.rows == 1
    assert all(a.shape == (1, 3, 1) for a in arrays.values())
