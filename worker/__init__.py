"""Workers: consume model queues, batch, run TorchScript or Python models, reply."""

from worker.batcher import Batcher
from worker.reconciler import Reconciler
from worker.runtime import Runtime, RuntimeContext

__all__ = ["Batcher", "Reconciler", "Runtime", "RuntimeContext"]
