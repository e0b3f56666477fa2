"""The keywords of producers and of their methods, typed once for both shells (checked
where they are used: ``ProducerCore`` and its ``submission``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypedDict, cast

from redbatch.errors import ConfigError
from redbatch.protocol import codec

# What a call waits when it passes no timeout (s): finite, so a mistyped queue name or a
# queue no worker serves ends in ResultTimeout, not a hung web request. None: no bound.
DEFAULT_TIMEOUT_S = 30.0
# How long "a live worker serves this queue" (require_worker) is trusted (s).
WORKERS_FRESH_S = 1.0

Priority = Literal["high", "normal", "low"]
# Per item of map/submit_many: one value for all, a sequence (input order) or a function of
# the payload.
PerItem = int | Sequence[int] | Callable[[Any], int]


class ProducerOptions(TypedDict, total=False):
    """The keywords of ``Producer``/``AsyncProducer`` (and their ``from_url``)."""

    namespace: str
    content_type: str
    max_payload_bytes: int
    max_queue_len: int
    cancel_on_timeout: bool
    cancel_on_cancel: bool
    default_timeout: float | None
    require_worker: bool
    name: str | None
    encoder: codec.Encoder | None
    decoder: codec.Decoder | None
    metrics: Any


class UrlOptions(ProducerOptions, total=False):
    """``from_url``'s keywords: a producer's, and ``cluster`` (None: ask the server) and
    ``max_connections`` (its pool's size, per node on a cluster)."""

    cluster: bool | None
    max_connections: int | None


class PoolOptions(TypedDict):
    cluster: bool | None
    max_connections: int | None


def url_options(options: UrlOptions) -> tuple[ProducerOptions, PoolOptions]:
    """``from_url``'s keywords split into the producer's and its client's."""
    rest = dict(options)
    pool = PoolOptions(
        cluster=rest.pop("cluster", None),  # type: ignore[typeddict-item]
        max_connections=rest.pop("max_connections", None),  # type: ignore[typeddict-item]
    )
    return cast(ProducerOptions, rest), pool


def client_options(options: ProducerOptions) -> ProducerOptions:
    """The keywords of a producer given its client: ``from_url``'s pool keywords would be
    silently meaningless there (the client brings its own pool), so they are refused."""
    for name in ("max_connections", "cluster"):
        if name in options:
            raise ConfigError(
                f"{name}= is for from_url(url, ...), which makes the producer's client; a "
                f"client you pass keeps its own pool (e.g. redis.Redis(..., max_connections=N))"
            )
    return options


class SubmitOptions(TypedDict, total=False):
    """Keywords of ``submit`` and ``call``.

    ``id``: a caller-chosen request id (idempotent: an id already waiting, running or
    finished is not run again). ``timeout`` (s): the request's deadline (workers skip it
    after that) and the bound of the call; default the producer's ``default_timeout``.
    ``cost``: its weight for the batch former (e.g. tokens). ``priority``: the lane.
    ``shard_key``: requests with the same key go to the same shard of a sharded queue.
    ``require_worker``: raise NoWorker when no live worker serves the queue (default: the
    producer's setting). ``stream``: a streaming handler's chunks come as they are made, for
    ``handle.stream()``."""

    id: str | None
    timeout: float | None
    cost: int
    priority: Priority
    shard_key: str | bytes | None
    require_worker: bool | None
    stream: bool


class FromOptions(TypedDict, total=False):
    """Keywords of ``stream_from``: ``after`` the position a reader had (``handle.position``;
    default: from the first chunk), ``timeout`` of the whole read, ``resume`` on a re-run
    (``"raise"``: StreamRestarted, or ``"restart"``)."""

    after: tuple[int, int]
    timeout: float | None
    resume: str


def from_args(options: FromOptions) -> tuple[tuple[int, int], float | None, str]:
    return options.get("after", (0, -1)), options.get("timeout"), options.get("resume", "raise")


class ManyOptions(TypedDict, total=False):
    """Keywords of ``submit_many`` (and ``map``, which adds ``return_exceptions``): as
    ``SubmitOptions``, with ``cost`` per item (one int, a sequence in input order, or a
    function of the payload) and ``chunk`` requests per admission (one round trip)."""

    timeout: float | None
    cost: PerItem
    priority: Priority
    chunk: int
    require_worker: bool | None
    stream: bool


class MapOptions(ManyOptions, total=False):
    """``map``'s keywords: ``submit_many``'s, and ``return_exceptions`` (a failed request's
    exception takes its place in the results; otherwise the first failure is raised once
    every request has ended or the timeout passed)."""

    return_exceptions: bool


def check_flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)
