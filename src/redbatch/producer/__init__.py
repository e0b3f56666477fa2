"""Producers: submit requests and receive their outcomes (sync and asyncio)."""

from redbatch.errors import MapQueueFull
from redbatch.producer.aio import AsyncProducer
from redbatch.producer.handle import AsyncHandle, Handle
from redbatch.producer.options import Priority
from redbatch.producer.sync import Producer

__all__ = ["AsyncHandle", "AsyncProducer", "Handle", "MapQueueFull", "Priority", "Producer"]
