"""Batch formation: pure decisions about which held requests run together, and when."""

from redbatch.batching.policy import BatchPolicy, Decision, Held, decide

__all__ = ["BatchPolicy", "Decision", "Held", "decide"]
