"""Batch formation: pure decisions about which held requests run together, and when."""

from redbatch.batching.adaptive import AdaptiveWindow
from redbatch.batching.policy import BatchPolicy, Decision, Held, decide

__all__ = ["AdaptiveWindow", "BatchPolicy", "Decision", "Held", "decide"]
