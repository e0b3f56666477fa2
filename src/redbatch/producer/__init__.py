"""Producers: submit requests and receive their outcomes (sync and asyncio)."""

from redbatch.errors import MapQueueFull
from redbatch.producer.aio import AsyncHandle, AsyncProducer
from redbatch.producer.sync import Handle, Producer

__all__ = ["AsyncHandle", "AsyncProducer", "Handle", "MapQueueFull", "Producer"]
