"""The KServe SDK's ``InferenceGRPCClient`` against a server: ``python -m tests.grpc.kserve_client
<host:port> <token> < x.npy`` prints what each call answered, as one JSON object; the mlp's
input ``x`` comes on stdin (``numpy.save``'s format).

A process of its own: the SDK's generated protobuf modules register the package ``inference``
as tritonclient's do (which the server side imports), and one process cannot hold both.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import grpc
import numpy as np
import orjson
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs


async def refused(call: Any) -> list[str]:
    """The gRPC status name and message of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return [exc.code().name, exc.details() or ""]
    raise AssertionError("the call succeeded")


async def main(url: str, token: str, x: np.ndarray[Any, Any]) -> dict[str, Any]:
    headers = [("authorization", f"Bearer {token}")]
    client = InferenceGRPCClient(url, timeout=30, retries=0)
    out: dict[str, Any] = {"live": await client.is_server_live(),
                           "ready": await client.is_server_ready(headers=headers),
                           "model_ready": await client.is_model_ready("mlp", headers=headers)}
    raw = InferInput("x", list(x.shape), "FP32")
    raw.set_data_from_numpy(x, binary_data=True)
    answer = await client.infer(InferRequest("mlp", [raw], request_id="k-1"), headers=headers)
    out["raw"] = {"id": answer.id, "version": answer.model_version,
                  "outputs": {o.name: o.as_numpy().tolist() for o in answer.outputs}}
    typed = InferInput("x", list(x.shape), "FP32")
    typed.set_data_from_numpy(x, binary_data=False)
    answer = await client.infer(InferRequest("mlp", [typed]), headers=headers)
    out["typed"] = {o.name: o.as_numpy().tolist() for o in answer.outputs}
    text = InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array(["kserve", "é"], dtype=np.object_), binary_data=True)
    answer = await client.infer(InferRequest("strings", [text]), headers=headers)
    out["strings"] = {o.name: [v.decode() if isinstance(v, bytes) else v
                               for v in o.as_numpy().tolist()] for o in answer.outputs}
    wrong = InferInput("x", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=True)
    out["wrong_shape"] = await refused(client.infer(InferRequest("mlp", [wrong]),
                                                    headers=headers))
    out["unknown_model"] = await refused(client.infer(InferRequest("nope", [raw]),
                                                      headers=headers))
    out["no_token"] = await refused(client.infer(InferRequest("mlp", [raw])))
    # Metadata, which the client has no method for: the SDK's own generated stub.
    async with grpc.aio.insecure_channel(url) as channel:
        stub = stubs.GRPCInferenceServiceStub(channel)
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), metadata=headers)
        out["metadata"] = {"name": meta.name, "versions": list(meta.versions),
                           "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs]}
        server = await stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=headers)
        out["server"] = server.name
    await client.close()
    return out


if __name__ == "__main__":
    x = np.load(io.BytesIO(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], x))))
