"""Batch formation: pure decisions about which held requests run together, and when."""

from redbatch.batching.adaptive import AdaptiveWindow
from redbatch.batching.company import Company
from redbatch.batching.policy import BatchPolicy, Decision, Held, decide

__all__ = ["AdaptiveWindow", "BatchPolicy", "Company", "Decision", "Held", "decide"]
