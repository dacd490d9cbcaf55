"""What the facade and the workers share.

- ``common.model``: dtypes and tensor codecs, signatures (the one request validation),
  model.yaml, the repository;
- ``common.wire``: the messages that cross the queue hop and their public framing;
- ``common.transport``: the ``Broker`` contract, in-memory and AMQP;
- ``common.state``: the ``StateStore`` contract, in-memory and Redis;
- beside them: settings (``config``), the error tree (``errors``), ``metrics``, ``logging``.
"""

from common.errors import InfernoError
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.repository import ModelRepository
from common.model.signature import Signature, TensorSpec
from common.settings import CommonSettings, FacadeSettings, WorkerSettings
from common.state.memory import InMemoryStateStore
from common.state.store import ModelState, StateStore, WorkerInfo
from common.transport.broker import Broker, Delivery, Subscription
from common.transport.memory import InMemoryBroker
from common.wire.messages import PredictReply, PredictRequest

__all__ = [
    "Broker",
    "CommonSettings",
    "DType",
    "Delivery",
    "FacadeSettings",
    "InMemoryBroker",
    "InMemoryStateStore",
    "InfernoError",
    "ModelConfig",
    "ModelRepository",
    "ModelState",
    "PredictReply",
    "PredictRequest",
    "Signature",
    "StateStore",
    "Subscription",
    "TensorSpec",
    "WorkerInfo",
    "WorkerSettings",
]
