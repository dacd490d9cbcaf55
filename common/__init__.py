"""Contracts shared by the facade and the workers: config, tensors, signatures, wire messages,
the broker and state-store interfaces with their in-memory implementations, metrics, logging."""

from common.broker import Broker, Delivery, Subscription
from common.config import CommonSettings, FacadeSettings, WorkerSettings
from common.dtypes import DType
from common.errors import InfernoError
from common.memory_broker import InMemoryBroker
from common.memory_state import InMemoryStateStore
from common.model_config import ModelConfig
from common.repository import ModelRepository
from common.signature import Signature, TensorSpec
from common.state import ModelState, StateStore, WorkerInfo
from common.wire import PredictReply, PredictRequest

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
