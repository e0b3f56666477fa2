"""redbatch: ML inference requests over Redis Streams, run in micro-batches, nothing lost."""

from redbatch.config import SchedulerConfig, WorkerConfig
from redbatch.errors import (
    MapQueueFull,
    QueueFull,
    RedbatchError,
    RedisRefused,
    RequestCancelled,
    RequestDead,
    RequestExpired,
    RequestFailed,
    ResultNotFound,
    ResultTimeout,
    Retry,
)
from redbatch.producer import AsyncHandle, AsyncProducer, Handle, Producer
from redbatch.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncHandle",
    "AsyncProducer",
    "Handle",
    "MapQueueFull",
    "Producer",
    "QueueFull",
    "RedbatchError",
    "RedisRefused",
    "RequestCancelled",
    "RequestDead",
    "RequestExpired",
    "RequestFailed",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "SchedulerConfig",
    "Worker",
    "WorkerConfig",
]
