"""What crosses the queue hop: typed messages, and the public framing of docs/queue-protocol.md."""

from common.wire.messages import PredictReply, PredictRequest

__all__ = ["PredictReply", "PredictRequest"]
