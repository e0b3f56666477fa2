"""Turn a ``module:function`` handler spec into a callable, with one clear error if it fails."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError
from redbatch.protocol import codec
from redbatch.worker.calling import Handler, HandlerLoop
from redbatch.worker.executor import Executor, error_text

log = logging.getLogger(__name__)


def add_paths(paths: tuple[str, ...]) -> None:
    """Put ``paths`` (``--path``) first on ``sys.path``, in the order given, so a handler
    module beside the application imports as it would from there (rq's ``--path``)."""
    resolved = [os.path.abspath(p) for p in paths]
    for path, given in zip(resolved, paths, strict=True):
        if not os.path.isdir(path):
            raise ConfigError(f"--path {given!r} is not a directory")
    for path in reversed(resolved):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def _import_target(spec: str, what: str) -> Any:
    """The object ``module:attr`` (attr may be dotted) names, or ConfigError."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"{what} must look like module:function, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config error here
        raise ConfigError(f"cannot import {what} {spec!r}: {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"cannot import {what} {spec!r}: {module_name} has no {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return target


def load_handler(spec: str, options: tuple[tuple[str, str], ...] = ()) -> Handler:
    """Import ``module:attr`` (attr may be dotted); bind ``options`` as keyword arguments."""
    target = _import_target(spec, "handler")
    if options:
        target = functools.partial(target, **dict(options))
    handler: Handler = target
    return handler


def load_encoder(spec: str) -> codec.Encoder | None:
    """``--encoder module:function``: msgpack's ``default=`` for result types the codec does
    not know ("" = none). Whatever it raises becomes the item's encoding error."""
    if not spec:
        return None
    hook: Callable[[Any], Any] = _import_target(spec, "encoder")

    def encoder(obj: Any) -> Any:
        try:
            return hook(obj)
        except TypeError:
            raise
        except Exception as exc:  # the codec turns TypeError into this item's PayloadError
            raise TypeError(
                f"encoder {spec} failed on an object of type {type(obj).__name__}: "
                f"{error_text(exc)}"
            ) from None

    return encoder


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


def warm_up(handler: Handler, loop: HandlerLoop | None = None) -> None:
    """Call the handler's ``warm_up`` (e.g. load a model), if it has one, with the options
    bound to it: a failure is a configuration error (a missing device, weights...). An
    ``async def warm_up`` runs on ``loop``, the one the handler's batches will run on."""
    bound = handler.keywords if isinstance(handler, functools.partial) else {}
    target = handler.func if isinstance(handler, functools.partial) else handler
    hook = getattr(target, "warm_up", None)
    if not callable(hook):
        return
    log.info(
        "warming up %s", getattr(target, "__qualname__", target), extra={"event": "handler_warm_up"}
    )
    own_loop = loop is None
    loop = loop or HandlerLoop()
    try:
        done = hook(**bound)
        if inspect.isawaitable(done):
            loop.run(done)
    except Exception as exc:
        raise ConfigError(f"handler warm-up failed: {type(exc).__name__}: {exc}") from None
    finally:
        if own_loop:
            loop.close()


def warm_up_all(
    executors: Iterable[Executor], compute: ThreadPoolExecutor, loop: HandlerLoop
) -> None:
    """Each handler's warm-up (once per handler), on the handler thread ``compute``: what
    it builds (a CUDA context, an async client on ``loop``) is where its batches use it."""
    for executor in {id(e.handler): e for e in executors}.values():
        compute.submit(warm_up, executor.handler, loop).result()


def load_executors(
    config: WorkerConfig, handler: Handler | None, loop: HandlerLoop | None = None
) -> dict[str, Executor]:
    """An executor per queue (its shards share it: ``logical_name``); a handler serving
    several queues is loaded once. Every executor runs async handlers on ``loop``."""
    if handler is None:
        add_paths(config.path)
    limits = codec.Limits(config.max_payload_bytes)
    retry_on = load_exception_types(config.retry_on)
    encoder = load_encoder(config.encoder)
    loop = loop or HandlerLoop()
    loaded: dict[tuple[str, tuple[tuple[str, str], ...]], Handler] = {}
    executors = {}
    for queue in config.queues:
        spec = config.handler_for(queue)
        if handler is None and spec not in loaded:
            loaded[spec] = load_handler(*spec)
        executors[queue] = Executor(
            handler or loaded[spec], limits, retry_on=retry_on, loop=loop, encoder=encoder
        )
    return executors
