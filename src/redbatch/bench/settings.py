"""What one ``redbatch bench`` run does, checked before anything starts (bad input: exit 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError
from redbatch.protocol.codec import DEFAULT_LIMITS
from redbatch.protocol.keys import KeySpace, check_queue_name
from redbatch.transport.connection import DEFAULT_URL, check_url, redacted

DEFAULT_HANDLER = "redbatch.handlers:echo"
# Built-in handlers that return their payloads unchanged: their results can be checked.
ECHOING_HANDLERS = ("redbatch.handlers:echo", "redbatch.handlers:sleep")
DEFAULT_CONCURRENCY = 64
ARRIVALS = ("poisson", "fixed")
MAX_WORKERS = 256


@dataclass(frozen=True)
class Settings:
    """``redis_url`` None: start a private redis-server (``--embedded``)."""

    redis_url: str | None
    namespace: str = "rb"
    queue: str | None = None
    workers: int = 2
    handler: str = DEFAULT_HANDLER
    handler_options: tuple[tuple[str, str], ...] = ()
    max_batch_size: int | None = None  # None: the worker's default
    max_wait_ms: int | None = None
    requests: int = 1000
    concurrency: int = DEFAULT_CONCURRENCY  # closed loop: requests in flight
    rate: float | None = None  # open loop: arrivals per second (then concurrency is unused)
    arrivals: str = "poisson"
    payload_bytes: int = 64
    timeout_s: float = 60.0
    sample: int = 1000  # requests whose result hash is read for the batch sizes
    verify: bool = True
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            check_url(self.redis_url)
        KeySpace(self.namespace)
        if self.queue is not None:
            check_queue_name(self.queue)
        _at_least("--requests", self.requests, 1)
        _at_least("--concurrency", self.concurrency, 1)
        _at_least("--sample", self.sample, 0)
        _at_least("--payload-bytes", self.payload_bytes, 0)
        if self.payload_bytes > DEFAULT_LIMITS.max_payload_bytes:
            raise ConfigError(
                f"--payload-bytes {self.payload_bytes} is over the producer's limit of "
                f"{DEFAULT_LIMITS.max_payload_bytes} bytes"
            )
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be from 0 to {MAX_WORKERS}, got {self.workers}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"--rate must be a positive number of requests/s, got {self.rate}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(
                f"--timeout must be a positive number of seconds, got {self.timeout_s}"
            )
        if self.arrivals not in ARRIVALS:
            raise ConfigError(f"--arrivals must be one of {', '.join(ARRIVALS)}")
        self._check_targets()
        if self.workers:
            self.worker_config(queue=self.queue or "bench")  # the workers' checks, now

    def _check_targets(self) -> None:
        if self.workers == 0 and self.redis_url is None:
            raise ConfigError("--embedded needs --workers 1 or more: nothing else serves it")
        if self.workers == 0 and self.queue is None:
            raise ConfigError("--workers 0 needs --queue: the queue your running workers serve")

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def checks_results(self) -> bool:
        return self.verify and self.handler in ECHOING_HANDLERS

    def worker_config(self, url: str = DEFAULT_URL, queue: str = "bench") -> WorkerConfig:
        optional: dict[str, Any] = {
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
        }
        return WorkerConfig(
            queues=(queue,),
            handler=self.handler,
            handler_options=self.handler_options,
            redis_url=url,
            namespace=self.namespace,
            **{k: v for k, v in optional.items() if v is not None},
        )

    def report_settings(self, url: str, queue: str) -> dict[str, Any]:
        """The ``settings`` object of the JSON report."""
        return {
            "redis": redacted(url),
            "embedded": self.redis_url is None,
            "namespace": self.namespace,
            "queue": queue,
            "loop": "open" if self.open_loop else "closed",
            "concurrency": None if self.open_loop else self.concurrency,
            "rate": self.rate,
            "arrivals": self.arrivals if self.open_loop else None,
            "payload_bytes": self.payload_bytes,
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "handler": self.handler,
            "handler_options": dict(self.handler_options),
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "results_checked": self.checks_results,
        }


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{flag} must be at least {low}, got {value}")
