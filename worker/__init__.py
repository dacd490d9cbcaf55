"""Workers: consume model queues, batch, run TorchScript or Python models, reply."""

from worker.batcher import Batcher
from worker.runtime import Runtime, RuntimeContext
from worker.worker import Worker

__all__ = ["Batcher", "Runtime", "RuntimeContext", "Worker"]
