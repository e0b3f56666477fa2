"""Validated, frozen configuration, read from ``REDBATCH_*`` variables and explicit overrides.

This is the one module that reads the environment. Each setting is declared once, as a
field with its ``Setting`` (``redbatch.settings``): variable, flag, help, bounds. Every
setting has one environment name; an unknown ``REDBATCH_*`` variable is an error (a typo
must not be silently ignored).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from redbatch import config_shared as shared
from redbatch.config_env import (
    ENV_PREFIX,
    parse_cluster,
    parse_handler_options,
    parse_sizes,
    split_handlers,
    words,
)
from redbatch.errors import ConfigError
from redbatch.protocol.keys import KeySpace, check_queue_name
from redbatch.service_links import check_service_links, is_service_link
from redbatch.settings import check_all, config_class, declared, declared_as, setting
from redbatch.transport.connection import check_url

MAX_BATCH_SIZE_LIMIT = 4096


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@config_class
class WorkerConfig:
    """Everything a worker process needs; invalid values raise ConfigError on creation."""

    queues: tuple[str, ...] = setting(
        env="REDBATCH_QUEUES", flag="QUEUE...", help="queues to serve (space or comma separated)"
    )
    handler: str | tuple[str, ...] = setting(
        env="REDBATCH_HANDLER",
        flag="--handler",
        metavar="[QUEUE=]MODULE:FUNCTION",
        help="batch function for every queue, and/or QUEUE=module:function for one queue",
    )
    # ("name", "value") for every handler, ("QUEUE:name", "value") for one queue's handler.
    handler_options: tuple[tuple[str, str], ...] = setting(
        default=(),
        env="REDBATCH_HANDLER_OPTIONS",
        flag="--handler-option",
        metavar="[QUEUE:]NAME=VALUE",
        parse=parse_handler_options,
        help="keyword arguments for the handlers: name=value, or QUEUE:name=value for one",
    )
    # Where handler modules are imported from, before site-packages (rq's --path).
    path: tuple[str, ...] = setting(
        default=(".",), env="REDBATCH_PATH", metavar="DIR",
        help="directory to import handlers from, put first on sys.path",
    )  # fmt: skip
    encoder: str = setting(
        default="", env="REDBATCH_ENCODER", metavar="MODULE:FUNCTION", shown="none",
        help="function turning result types the codec cannot carry into ones it can (default=)",
    )  # fmt: skip
    redis_url: str = shared.redis_url()
    namespace: str = shared.namespace()
    name: str = setting(
        default_factory=default_worker_name,
        env="REDBATCH_WORKER_NAME",
        help="consumer name; the default host-pid-random is unique per process",
    )
    max_batch_size: int = setting(
        default=32, env="REDBATCH_MAX_BATCH_SIZE", help="items per batch",
        bounds=(1, MAX_BATCH_SIZE_LIMIT),
    )  # fmt: skip
    max_wait_ms: int = setting(
        default=2, env="REDBATCH_MAX_WAIT_MS", bounds=(0, 60_000),
        help="once the first item is in, wait at most this long (ms) to fill the batch",
    )  # fmt: skip
    # A request costing more than the budget runs alone.
    max_batch_cost: int = setting(
        default=0, env="REDBATCH_MAX_BATCH_COST", bounds=(0, 10**12),
        help="sum of the requests' cost (e.g. tokens) per batch; 0 = no budget",
    )  # fmt: skip
    # Sizes a compiled model likes.
    preferred_batch_sizes: tuple[int, ...] = setting(
        default=(), env="REDBATCH_PREFERRED_BATCH_SIZES", metavar="N,N,...", parse=parse_sizes,
        help="run as soon as this many are held, before the window closes (e.g. 8,16,32)",
    )  # fmt: skip
    priority_aging_ms: int = setting(
        default=1000, env="REDBATCH_PRIORITY_AGING_MS", bounds=(0, 3_600_000),
        help="a waiting request gains one priority level per this long (ms); 0 = strict order",
    )  # fmt: skip
    # The worker tunes its window and batch size (within the limits above).
    target_latency_ms: int = setting(
        default=0, env="REDBATCH_TARGET_LATENCY_MS", bounds=(0, 600_000),
        help="tune window and batch size to keep queue wait + service under this (ms); 0 = off",
    )  # fmt: skip
    # BLOCK 0 would block for ever and the worker could not notice a stop request.
    block_ms: int = setting(
        default=1000, env="REDBATCH_BLOCK_MS", bounds=(1, 60_000),
        help="idle blocking read (ms); bounds how fast a stop request is noticed",
    )  # fmt: skip
    result_ttl_s: int = shared.result_ttl()
    dead_maxlen: int = shared.dead_maxlen()
    max_payload_bytes: int = setting(
        default=16 * 1024 * 1024, env="REDBATCH_MAX_PAYLOAD_BYTES",
        bounds=(1, 512 * 1024 * 1024), help="largest payload a worker accepts, bytes",
    )  # fmt: skip
    log_level: str = shared.log_level()
    # A hung GPU kernel cannot be interrupted: the heartbeat stops and the process ends; the
    # scheduler then re-queues what it held.
    batch_timeout_s: int = setting(
        default=300, env="REDBATCH_BATCH_TIMEOUT", flag="--batch-timeout",
        bounds=(1, 7 * 86_400),
        help="seconds a batch may run; past it the worker exits 4 (to be restarted)",
    )  # fmt: skip
    heartbeat_ttl_s: int = setting(
        default=5, env="REDBATCH_HEARTBEAT_TTL", flag="--heartbeat-ttl", bounds=(2, 3600),
        help="seconds a heartbeat lives; the scheduler re-queues a dead worker's work after this",
    )  # fmt: skip
    # 20 s: inside Kubernetes' default 30 s grace period, with a margin to hand back and exit.
    drain_timeout_s: int = setting(
        default=20, env="REDBATCH_DRAIN_TIMEOUT", flag="--drain-timeout", bounds=(1, 86_400),
        help="seconds the running batch may take after SIGTERM",
    )  # fmt: skip
    # A Retry past this ends the request dead too.
    max_attempts: int = shared.max_attempts()
    retry_on: tuple[str, ...] = setting(
        default=(), env="REDBATCH_RETRY_ON", metavar="MODULE.EXCEPTION",
        help="exception types that re-queue the batch with backoff instead of failing it",
    )  # fmt: skip
    retry_delay_s: float = setting(
        default=1.0, env="REDBATCH_RETRY_DELAY", flag="--retry-delay", bounds=(0.0, 86_400.0),
        help="first retry delay, seconds; doubles per attempt",
    )  # fmt: skip
    metrics_port: int = shared.metrics_port()
    log_format: str = shared.log_format()
    cluster: bool | None = shared.cluster()
    # A pool (worker/pool.py): one supervising parent, its children the workers.
    processes: int = setting(
        default=1, env="REDBATCH_PROCESSES", bounds=(1, 256),
        help="run this many worker processes under one supervising parent (a pool)",
    )  # fmt: skip
    gpus: str = setting(
        default="", env="REDBATCH_GPUS", metavar="0,1,...|all", shown="none",
        help="a pool with one worker per device (0,1,2,3 or all), CUDA_VISIBLE_DEVICES set",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigError(f"give at least one queue to serve ({where('queues')})")
        for queue in self.queues:
            check_queue_name(queue)
        if len(set(self.queues)) != len(self.queues):
            raise ConfigError(f"a queue is listed twice: {' '.join(self.queues)}")
        self._check_handlers()
        check_url(self.redis_url)
        KeySpace(self.namespace)
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"worker name must be non-empty without spaces ({where('name')})")
        check_all(self)
        for size in self.preferred_batch_sizes:
            if isinstance(size, bool) or not isinstance(size, int):
                raise ConfigError(f"preferred_batch_sizes must be whole numbers, got {size!r}")
            if not 1 <= size <= self.max_batch_size:
                raise ConfigError(
                    f"preferred_batch_sizes must lie within 1..max_batch_size "
                    f"({self.max_batch_size}), got {size} ({where('preferred_batch_sizes')})"
                )
        for name in self.retry_on:
            if "." not in name:
                raise ConfigError(f"retry_on entries must look like module.ExceptionName: {name!r}")
        _check_cluster(self.cluster)

    def _check_handlers(self) -> None:
        if isinstance(self.handler, str):
            object.__setattr__(self, "handler", tuple(words(self.handler)))
        try:
            default, per_queue = split_handlers(self.handlers_given)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({where('handler')})") from None
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
            raise ConfigError(f"give at least one queue to serve ({where('queues')})")
        if "handler" not in values:
            raise ConfigError(f"missing setting handler ({where('handler')})")
        return cls(**values)


@config_class
class SchedulerConfig:
    """The scheduler process: reaping, delayed retries, consumer clean-up on every queue."""

    redis_url: str = shared.redis_url()
    namespace: str = shared.namespace()
    interval_s: float = setting(
        default=1.0, env="REDBATCH_SCHEDULER_INTERVAL", flag="--interval",
        bounds=(0.05, 3600.0), help="seconds between the scheduler's passes",
    )  # fmt: skip
    # Its heartbeat, which carries its batch_timeout, may still be alive.
    hung_margin_s: int = setting(
        default=30, env="REDBATCH_HUNG_MARGIN", flag="--hung-margin", bounds=(0, 86_400),
        help="a request held longer than its worker's batch_timeout plus this (s) is hung",
    )  # fmt: skip
    max_attempts: int = shared.max_attempts()
    result_ttl_s: int = shared.result_ttl()
    dead_maxlen: int = shared.dead_maxlen()
    log_level: str = shared.log_level()
    metrics_port: int = shared.metrics_port()
    log_format: str = shared.log_format()
    cluster: bool | None = shared.cluster()

    def __post_init__(self) -> None:
        check_url(self.redis_url)
        KeySpace(self.namespace)
        check_all(self)
        _check_cluster(self.cluster)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SchedulerConfig:
        return cls(**_settings(cls, environ, overrides))


CONFIG_CLASSES: tuple[type[WorkerConfig] | type[SchedulerConfig], ...] = (
    WorkerConfig,
    SchedulerConfig,
)


def _env_names() -> dict[str, str]:
    """Setting name -> its variable, over every config class; a name read by two classes
    has one variable (and one meaning)."""
    names: dict[str, str] = {}
    for cls in CONFIG_CLASSES:
        for one in declared(cls):
            if names.setdefault(one.name, one.setting.env) != one.setting.env:
                raise AssertionError(f"{one.name}: two variables in two config classes")
    return names


# setting name -> environment variable, for every setting of every part.
ENV_NAMES: dict[str, str] = _env_names()


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``REDBATCH_*`` variables nobody reads: they are typos or stale settings
    (Kubernetes service links excepted: ``service_links``)."""
    known = set(ENV_NAMES.values())
    check_service_links(environ, known)
    unknown = sorted(
        k for k in environ
        if k.startswith(ENV_PREFIX) and k not in known and not is_service_link(k, environ[k])
    )  # fmt: skip
    if unknown:
        raise ConfigError(
            f"unknown environment variable {unknown[0]} (known: {', '.join(sorted(known))})"
        )


def where(name: str) -> str:
    """How a user sets worker setting ``name``: ``--flag / REDBATCH_VARIABLE``."""
    return declared_as(WorkerConfig, name).where


def _settings(
    cls: type[WorkerConfig] | type[SchedulerConfig],
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """``REDBATCH_*`` values of ``cls``'s settings, then ``overrides`` (None/() ignored)."""
    environ = os.environ if environ is None else environ
    check_environment(environ)
    values: dict[str, Any] = {}
    for one in declared(cls):
        raw = environ.get(one.setting.env)
        if raw is not None and raw != "":
            values[one.name] = one.parse(raw)
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    return values


def _check_cluster(cluster: object) -> None:
    if cluster not in (None, True, False):
        raise ConfigError(f"cluster must be True, False or None (ask the server), got {cluster!r}")


__all__ = [
    "CONFIG_CLASSES",
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
