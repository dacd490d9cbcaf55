"""The KServe SDK's ``InferenceGRPCClient`` (KServe's ``grpc_predict_v2``, the subset of
Triton's service it speaks) against an embedded server, in a process of its own
(tests/grpc/kserve_client.py says why)."""

from __future__ import annotations

import asyncio
import io
import sys

import numpy as np
import orjson
import pytest

from tests.grpc.conftest import ServeGrpc
from tests.v2.test_triton_client import X, mlp_reference

pytestmark = pytest.mark.asyncio

TOKEN = "kserve-token"


async def test_the_kserve_grpc_client(serve_grpc: ServeGrpc) -> None:
    served = await serve_grpc(preload=["mlp", "strings"], api_token=TOKEN)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.grpc.kserve_client", served.url, TOKEN,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    x = io.BytesIO()
    np.save(x, X)
    stdout, stderr = await asyncio.wait_for(client.communicate(x.getvalue()), 120)
    assert client.returncode == 0, stderr.decode()
    out = orjson.loads(stdout)
    assert (out["live"], out["ready"], out["model_ready"]) == (True, True, True)
    assert (out["raw"]["id"], out["raw"]["version"]) == ("k-1", "2")
    want = mlp_reference(2)
    for answer in (out["raw"]["outputs"], out["typed"]):
        np.testing.assert_allclose(answer["probs"], want["probs"], rtol=1e-5, atol=1e-7)
        assert answer["label"] == want["label"].tolist()
    assert out["strings"] == {"upper": ["KSERVE", "É"], "length": [6, 1]}
    assert out["wrong_shape"][0] == "INVALID_ARGUMENT" and "'x'" in out["wrong_shape"][1]
    assert out["unknown_model"][0] == "NOT_FOUND"
    assert out["unknown_model"][1].startswith("Request for unknown model: 'nope' is not found")
    assert out["no_token"][0] == "UNAUTHENTICATED"
    assert out["metadata"] == {"name": "mlp", "versions": ["1", "2"],
                               "inputs": [["x", "FP32", [-1, 256]]]}
    assert out["server"] == "inferno"
