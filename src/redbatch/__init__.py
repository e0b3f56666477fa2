"""redbatch: ML inference requests over Redis Streams, run in micro-batches, nothing lost.

``import redbatch`` stays light for a web process that only produces: the worker and its
settings (and with them prometheus_client) load on first use of ``Worker``,
``WorkerConfig`` or ``SchedulerConfig``; click and rich only with the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from redbatch.errors import (
    ConfigError,
    ConnectionFailed,
    DuplicateRequestId,
    MalformedEntry,
    MapQueueFull,
    NoWorker,
    PayloadError,
    PayloadTooLarge,
    ProducerClosed,
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
    StreamRestarted,
    WrongEventLoop,
)
from redbatch.final import Final
from redbatch.producer import AsyncHandle, AsyncProducer, Handle, Priority, Producer

if TYPE_CHECKING:  # the type checker sees them as plain imports; at run time see __getattr__
    from redbatch.config import SchedulerConfig, WorkerConfig
    from redbatch.worker import Worker
    from redbatch.worker.request_info import RequestInfo

__version__ = "0.1.0"

__all__ = [
    "AsyncHandle",
    "AsyncProducer",
    "ConfigError",
    "ConnectionFailed",
    "DuplicateRequestId",
    "Final",
    "Handle",
    "MalformedEntry",
    "MapQueueFull",
    "NoWorker",
    "PayloadError",
    "PayloadTooLarge",
    "Priority",
    "Producer",
    "ProducerClosed",
    "QueueFull",
    "RedbatchError",
    "RedisRefused",
    "RequestCancelled",
    "RequestDead",
    "RequestExpired",
    "RequestFailed",
    "RequestInfo",
    "ResultNotFound",
    "ResultTimeout",
    "Retry",
    "SchedulerConfig",
    "StreamRestarted",
    "Worker",
    "WorkerConfig",
    "WrongEventLoop",
]

# The names loaded on first use (PEP 562), each with the one module that defines it: the
# worker pulls in prometheus_client and its whole pipeline, ~150 ms a web pod never needs.
_ON_FIRST_USE = {
    "RequestInfo": "redbatch.worker.request_info",
    "SchedulerConfig": "redbatch.config",
    "Worker": "redbatch.worker",
    "WorkerConfig": "redbatch.config",
}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'redbatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})
