"""``inferno serve`` as a user runs it: a subprocess on a free port, called over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import ssl as ssl_module
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import InferenceServerClient, InferInput
from tritonclient.utils import InferenceServerException

from tests.http import free_port, request_json
from tests.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]


def _serve(env: dict[str, str], ssl: ssl_module.SSLContext | None = None) -> Iterator[
        tuple[subprocess.Popen[str], str, str]]:
    """``inferno serve`` with ``env`` over the environment, until the test ends; ``ssl``: the
    client context of an HTTPS server."""
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "INFERNO_LOG_LEVEL": "INFO", "INFERNO_GRPC_PORT": str(grpc_port), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "inferno", "serve", "--port", str(port), "--repo",
         str(ROOT / "models")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    base = f"{'http' if ssl is None else 'https'}://127.0.0.1:{port}"
    try:
        # Another process: no event to await, so poll readiness (bounded).
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=5,
                                            context=ssl) as ready:
                    if ready.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "inferno serve did not become ready in 60s"
            time.sleep(0.1)
        yield process, base, f"127.0.0.1:{grpc_port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    yield from _serve({})


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path, "inferno-server", ip="127.0.0.1")


def test_serve_answers_http_and_grpc_and_stops_gracefully(
        served: tuple[subprocess.Popen[str], str, str]) -> None:
    process, base, grpc_url = served
    status, body = request_json(f"{base}/v1/models/mlp:predict",
                            {"inputs": {"x": {"data": [[0.1] * 256]}}})
    assert status == 200
    assert body["model"] == "mlp" and body["version"] == 2
    status, body = request_json(f"{base}/v1/models/mlp:predict", {"inputs": {"x": {"data": [1]}}})
    assert status == 422
    assert body["error"]["code"] == "invalid_input"  # type: ignore[index]
    # gRPC on INFERNO_GRPC_PORT, on the same event loop (uvloop) as HTTP.
    with InferenceServerClient(grpc_url) as triton:
        x = InferInput("x", [1, 256], "FP32").set_data_from_numpy(np.full((1, 256), 0.1,
                                                                           np.float32))
        result = triton.infer("mlp", [x])
        assert result.get_response().model_version == "2"
        assert result.as_numpy("label").shape == (1,)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "inferno.access"]
    assert any(line["msg"] == "POST /v1/models/mlp:predict 200" and line["request_id"]
               for line in access)
    assert any("unloaded mlp version 2" in line["msg"] for line in lines)


def test_tls_serves_https_and_grpc_with_the_certificate(pki: dict[str, Path]) -> None:
    """INFERNO_TLS_CERT_FILE + KEY: HTTPS and gRPC over TLS, verified against the CA; a
    plaintext gRPC client is refused, not answered."""
    client = ssl_module.create_default_context(cafile=str(pki["ca"]))
    server = _serve({"INFERNO_TLS_CERT_FILE": str(pki["cert"]),
                     "INFERNO_TLS_KEY_FILE": str(pki["key"])}, client)
    _, base, grpc_url = next(server)
    try:
        with urllib.request.urlopen(f"{base}/v2/models/mlp", context=client) as response:
            assert json.loads(response.read())["name"] == "mlp"
        x = InferInput("x", [1, 256], "FP32").set_data_from_numpy(np.zeros((1, 256), np.float32))
        with InferenceServerClient(grpc_url, ssl=True,
                                   root_certificates=str(pki["ca"])) as triton:
            assert triton.infer("mlp", [x]).as_numpy("label").shape == (1,)
        with InferenceServerClient(grpc_url) as plain, pytest.raises(
                InferenceServerException) as refused:
            plain.is_server_live(client_timeout=5)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
    finally:
        server.close()
