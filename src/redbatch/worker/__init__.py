"""The worker: reads micro-batches, runs the handler, records outcomes atomically."""

from redbatch.worker.runner import State, Worker

__all__ = ["State", "Worker"]
