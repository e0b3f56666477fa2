"""Validated, frozen configuration, read from ``REDBATCH_*`` variables and explicit overrides.

This is the one module that reads the environment. Every setting has one environment name;
an unknown ``REDBATCH_*`` variable is an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from redbatch.config_env import (
    ENV_NAMES,
    ENV_PREFIX,
    check_environment,
    from_text,
    parse_cluster,
    parse_handler_options,
    parse_sizes,
    where,
    words,
)
from redbatch.connection import DEFAULT_URL, check_url
from redbatch.errors import ConfigError
from redbatch.protocol.keys import QUEUE_NAME, KeySpace, check_queue_name

MAX_BATCH_SIZE_LIMIT = 4096

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("text", "json")
# TCP port of the Prometheus endpoint; 0 = no endpoint.
MAX_PORT = 65535


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _int_in(setting: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{setting} must be an integer from {low} to {high}, got {value!r} ({where(setting)})"
        )
    return value


def split_handlers(specs: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``("pkg:f", "rerank=pkg:g")`` -> the default spec ("" if none) and per-queue specs."""
    default = ""
    per_queue: dict[str, str] = {}
    for spec in specs:
        queue, sep, target = spec.partition("=")
        if not sep:
            if default:
                raise ConfigError(
                    f"two default handlers ({default!r} and {spec!r}): give one, and "
                    f"QUEUE=module:function for the others ({where('handler')})"
                )
            default, target = spec, spec
        elif not QUEUE_NAME.fullmatch(queue) or queue in per_queue:
            raise ConfigError(f"handler {spec!r}: bad or repeated queue name ({where('handler')})")
        else:
            per_queue[queue] = target
        module, colon, attr = target.partition(":")
        if not (module and colon and attr):
            raise ConfigError(
                f"handler must look like module:function or QUEUE=module:function, got {spec!r} "
                f"({where('handler')})"
            )
    return default, per_queue


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs; invalid values raise ConfigError on creation."""

    queues: tuple[str, ...]
    # "module:function" for every queue, and/or "QUEUE=module:function" for one queue.
    handler: str | tuple[str, ...]
    # ("name", "value") for every handler, ("QUEUE:name", "value") for one queue's handler.
    handler_options: tuple[tuple[str, str], ...] = ()
    redis_url: str = DEFAULT_URL
    namespace: str = "rb"
    name: str = field(default_factory=default_worker_name)
    max_batch_size: int = 32
    max_wait_ms: int = 2
    # Sum of the requests' `cost` per batch (e.g. tokens); 0 = no budget. A request costing
    # more than the budget runs alone.
    max_batch_cost: int = 0
    # Run before the window closes as soon as this many are held (sizes a compiled model likes).
    preferred_batch_sizes: tuple[int, ...] = ()
    # Priorities age: a waiting request gains one level per this long (0 = strict order).
    priority_aging_ms: int = 1000
    # When set, the worker tunes its window and batch size (within the limits above) to keep
    # queue wait + service time under this target.
    target_latency_ms: int = 0
    block_ms: int = 1000
    result_ttl_s: int = 3600
    dead_maxlen: int = 100_000
    max_payload_bytes: int = 16 * 1024 * 1024
    log_level: str = "INFO"
    # A batch running longer stops the heartbeat and ends the process (a hung GPU kernel
    # cannot be interrupted); the scheduler then re-queues what it held.
    batch_timeout_s: int = 300
    heartbeat_ttl_s: int = 5
    drain_timeout_s: int = 30
    # Deliveries before a request is dead-lettered (a Retry past this ends it dead too).
    max_attempts: int = 3
    # Exception types (module.Name) that re-queue an item with backoff instead of failing it.
    retry_on: tuple[str, ...] = ()
    retry_delay_s: float = 1.0
    # Prometheus endpoint (http://host:PORT/metrics); 0 = none.
    metrics_port: int = 0
    # "text" (one readable line per event) or "json" (one object per line, for collectors).
    log_format: str = "text"
    # Redis Cluster client (True), single node (False), or ask the server (None: its HELLO reply).
    cluster: bool | None = None

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigError("give at least one queue to serve (QUEUE... / REDBATCH_QUEUES)")
        for queue in self.queues:
            check_queue_name(queue)
        if len(set(self.queues)) != len(self.queues):
            raise ConfigError(f"a queue is listed twice: {' '.join(self.queues)}")
        self._check_handlers()
        check_url(self.redis_url)
        KeySpace(self.namespace)
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"worker name must be non-empty without spaces ({where('name')})")
        _int_in("max_batch_size", self.max_batch_size, 1, MAX_BATCH_SIZE_LIMIT)
        _int_in("max_wait_ms", self.max_wait_ms, 0, 60_000)
        _int_in("max_batch_cost", self.max_batch_cost, 0, 10**12)
        _int_in("priority_aging_ms", self.priority_aging_ms, 0, 3_600_000)
        _int_in("target_latency_ms", self.target_latency_ms, 0, 600_000)
        for size in self.preferred_batch_sizes:
            _int_in("preferred_batch_sizes", size, 1, self.max_batch_size)
        # BLOCK 0 would block for ever and the worker could not notice a stop request.
        _int_in("block_ms", self.block_ms, 1, 60_000)
        _int_in("result_ttl_s", self.result_ttl_s, 1, 30 * 86_400)
        _int_in("dead_maxlen", self.dead_maxlen, 1, 10**9)
        _int_in("max_payload_bytes", self.max_payload_bytes, 1, 512 * 1024 * 1024)
        _check_log_level(self.log_level)
        _int_in("batch_timeout_s", self.batch_timeout_s, 1, 7 * 86_400)
        _int_in("heartbeat_ttl_s", self.heartbeat_ttl_s, 2, 3600)
        _int_in("drain_timeout_s", self.drain_timeout_s, 1, 86_400)
        _int_in("max_attempts", self.max_attempts, 1, 1000)
        for name in self.retry_on:
            if "." not in name:
                raise ConfigError(f"retry_on entries must look like module.ExceptionName: {name!r}")
        _float_in("retry_delay_s", self.retry_delay_s, 0.0, 86_400.0)
        _check_telemetry(self.metrics_port, self.log_format)
        _check_cluster(self.cluster)

    def _check_handlers(self) -> None:
        if isinstance(self.handler, str):
            object.__setattr__(self, "handler", tuple(words(self.handler)))
        default, per_queue = split_handlers(self.handlers_given)
        strangers = sorted(set(per_queue) - set(self.queues))
        if strangers:
            raise ConfigError(
                f"handler given for {strangers[0]}, which this worker does not serve "
                f"(queues: {' '.join(self.queues)})"
            )
        missing = [q for q in self.queues if q not in per_queue and not default]
        if missing:
            raise ConfigError(
                f"no handler for queue {missing[0]}: give --handler module:function, or "
                f"{missing[0]}=module:function ({where('handler')})"
            )
        for key, _ in self.handler_options:
            queue = key.rpartition(":")[0]
            if queue and queue not in self.queues:
                raise ConfigError(
                    f"handler option {key!r} names a queue this worker does not serve"
                )

    @property
    def handlers_given(self) -> tuple[str, ...]:
        return (self.handler,) if isinstance(self.handler, str) else self.handler

    def handler_for(self, queue: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The handler spec serving ``queue`` and the options that apply to it."""
        default, per_queue = split_handlers(self.handlers_given)
        options = []
        for key, value in self.handler_options:
            target, _, name = key.rpartition(":")
            if target in ("", queue):
                options.append((name, value))
        return per_queue.get(queue, default), tuple(options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WorkerConfig:
        """Settings from ``REDBATCH_*`` variables, then ``overrides`` (None values ignored)."""
        values = _settings(cls, environ, overrides)
        if "queues" not in values:
            raise ConfigError("give at least one queue to serve (QUEUE... / REDBATCH_QUEUES)")
        if "handler" not in values:
            raise ConfigError(f"missing setting handler ({where('handler')})")
        return cls(**values)


@dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler process: reaping, delayed retries, consumer clean-up on every queue."""

    redis_url: str = DEFAULT_URL
    namespace: str = "rb"
    interval_s: float = 1.0
    # Held longer than the worker's batch_timeout plus this margin = hung (its heartbeat,
    # which carries its batch_timeout, may still be alive).
    hung_margin_s: int = 30
    max_attempts: int = 3
    result_ttl_s: int = 3600
    dead_maxlen: int = 100_000
    log_level: str = "INFO"
    metrics_port: int = 0
    log_format: str = "text"
    cluster: bool | None = None

    def __post_init__(self) -> None:
        check_url(self.redis_url)
        KeySpace(self.namespace)
        _float_in("interval_s", self.interval_s, 0.05, 3600.0)
        _int_in("hung_margin_s", self.hung_margin_s, 0, 86_400)
        _int_in("max_attempts", self.max_attempts, 1, 1000)
        _int_in("result_ttl_s", self.result_ttl_s, 1, 30 * 86_400)
        _int_in("dead_maxlen", self.dead_maxlen, 1, 10**9)
        _check_log_level(self.log_level)
        _check_telemetry(self.metrics_port, self.log_format)
        _check_cluster(self.cluster)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SchedulerConfig:
        return cls(**_settings(cls, environ, overrides))


def _settings(
    cls: type[WorkerConfig] | type[SchedulerConfig],
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """``REDBATCH_*`` values of ``cls``'s settings, then ``overrides`` (None/() ignored)."""
    environ = os.environ if environ is None else environ
    check_environment(environ)
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = environ.get(ENV_NAMES[f.name])
        if raw is not None and raw != "":
            values[f.name] = from_text(f.name, raw)
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    return values


def _check_log_level(level: str) -> None:
    if level not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")


def _check_telemetry(metrics_port: int, log_format: str) -> None:
    _int_in("metrics_port", metrics_port, 0, MAX_PORT)
    if log_format not in _LOG_FORMATS:
        raise ConfigError(
            f"log_format must be one of {', '.join(_LOG_FORMATS)}, got {log_format!r} "
            f"({where('log_format')})"
        )


def _check_cluster(cluster: object) -> None:
    if cluster not in (None, True, False):
        raise ConfigError(f"cluster must be True, False or None (ask the server), got {cluster!r}")


def _float_in(setting: str, value: Any, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        raise ConfigError(
            f"{setting} must be a number from {low:g} to {high:g}, got {value!r} ({where(setting)})"
        )
    return float(value)


__all__ = [
    "ENV_NAMES",
    "ENV_PREFIX",
    "MAX_BATCH_SIZE_LIMIT",
    "SchedulerConfig",
    "WorkerConfig",
    "check_environment",
    "parse_cluster",
    "parse_handler_options",
    "parse_sizes",
]
