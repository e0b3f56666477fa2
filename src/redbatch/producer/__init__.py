"""Producers: submit requests and receive their outcomes (sync and asyncio)."""

from redbatch.errors import MapQueueFull
from redbatch.producer.aio import AsyncProducer
from redbatch.producer.async_handle import AsyncHandle
from redbatch.producer.handle import Handle
from redbatch.producer.sync import Producer

__all__ = ["AsyncHandle", "AsyncProducer", "Handle", "MapQueueFull", "Producer"]
