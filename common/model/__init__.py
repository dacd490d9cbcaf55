"""The domain: tensor dtypes and their JSON codecs, model signatures and the one request
validation, model.yaml, and the model repository on disk."""

from common.model.codecs import Codec
from common.model.config import ModelConfig
from common.model.dtypes import DType
from common.model.repository import ModelEntry, ModelRepository
from common.model.signature import Signature, TensorSpec

__all__ = ["Codec", "DType", "ModelConfig", "ModelEntry", "ModelRepository", "Signature",
           "TensorSpec"]
