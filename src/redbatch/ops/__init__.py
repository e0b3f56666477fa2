"""Operator commands: ``redbatch status``, ``inspect`` and ``dlq`` (one module each)."""
