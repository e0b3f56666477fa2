"""Turn a ``module:function`` handler spec into a callable, with one clear error if it fails."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError
from redbatch.protocol import codec
from redbatch.worker.executor import Executor

Handler = Callable[[list[Any]], list[Any]]
log = logging.getLogger(__name__)


def load_handler(spec: str, options: tuple[tuple[str, str], ...] = ()) -> Handler:
    """Import ``module:attr`` (attr may be dotted); bind ``options`` as keyword arguments."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"handler must look like module:function, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config error here
        raise ConfigError(f"cannot import handler {spec!r}: {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"cannot import handler {spec!r}: {module_name} has no {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    if options:
        target = functools.partial(target, **dict(options))
    handler: Handler = target
    return handler


def load_exception_types(names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """``("torch.cuda.OutOfMemoryError", ...)`` -> the exception classes, or ConfigError."""
    types: list[type[BaseException]] = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise ConfigError(
                f"cannot import retry_on type {name!r}: {type(exc).__name__}: {exc}"
            ) from None
        if not (isinstance(target, type) and issubclass(target, BaseException)):
            raise ConfigError(f"retry_on type {name!r} is not an exception class")
        types.append(target)
    return tuple(types)


def warm_up(handler: Handler) -> None:
    """Call the handler's ``warm_up`` (e.g. load a model), if it has one, with the options
    bound to it: a failure is a configuration error (a missing device, weights...)."""
    bound = handler.keywords if isinstance(handler, functools.partial) else {}
    target = handler.func if isinstance(handler, functools.partial) else handler
    hook = getattr(target, "warm_up", None)
    if not callable(hook):
        return
    log.info("warming up %s", getattr(target, "__qualname__", target))
    try:
        hook(**bound)
    except Exception as exc:
        raise ConfigError(f"handler warm-up failed: {type(exc).__name__}: {exc}") from None


def load_executors(config: WorkerConfig, handler: Handler | None) -> dict[str, Executor]:
    """An executor per queue (its shards share it: ``logical_name``); a handler serving
    several queues is loaded once."""
    limits = codec.Limits(config.max_payload_bytes)
    retry_on = load_exception_types(config.retry_on)
    loaded: dict[tuple[str, tuple[tuple[str, str], ...]], Handler] = {}
    executors = {}
    for queue in config.queues:
        spec = config.handler_for(queue)
        if handler is None and spec not in loaded:
            loaded[spec] = load_handler(*spec)
        executors[queue] = Executor(handler or loaded[spec], limits, retry_on=retry_on)
    return executors
