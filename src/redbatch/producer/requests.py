"""Pure helpers for requests on their way: building many at once, routing them to shards,
chunking admissions, and gathering ``map`` results under one deadline."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from redbatch.errors import ConfigError, DuplicateRequestId
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Deadline
from redbatch.producer.entries import Submission
from redbatch.producer.options import MapOptions, PerItem
from redbatch.protocol.keys import check_priority


def submissions(
    core: ProducerCore,
    queue: str,
    payloads: Iterable[Any],
    timeout: float | None,
    priority: str,
    cost: PerItem,
    stream: bool = False,
) -> list[Submission]:
    """The submissions of ``map``/``submit_many``, every payload encoded before any is sent;
    ``cost`` per item: one int for all, a sequence in input order, or a function of each
    payload."""
    check_priority(priority)
    items = payloads if isinstance(payloads, Sequence) else list(payloads)
    if isinstance(cost, int):  # the common case: one cost for all
        costs: Sequence[int] = [cost] * len(items)
    else:
        costs = [cost(p) for p in items] if callable(cost) else list(cost)
        if len(costs) != len(items):
            raise ConfigError(f"cost has {len(costs)} values for {len(items)} payloads")
    return core.submissions(
        queue, items, costs, timeout=timeout, priority=priority, stream=stream
    )  # fmt: skip


def check_new_ids(waiting: Container[str], ids: list[str]) -> None:
    """Refuse ids this producer already waits for, or repeated within one call."""
    clash = next((i for i in ids if i in waiting), None)
    if clash is None and len(set(ids)) != len(ids):
        clash = "(repeated within this call)"
    if clash is not None:
        raise DuplicateRequestId(f"already waiting for request {clash}")


def on_shards(subs: list[Submission], shards: list[str], chunk: int) -> list[Submission]:
    """``subs`` with chunk i (of ``chunk`` each) addressed to physical queue ``shards[i]``;
    as given (no copies) when that is where they already go, an unsharded queue."""
    if all(name == subs[0].queue for name in shards):
        return subs
    return [replace(s, queue=shards[i // chunk]) for i, s in enumerate(subs)]


class _Queued(Protocol):
    id: str
    queue: str


def by_queue(handles: Sequence[_Queued]) -> dict[str, list[str]]:
    """Request ids of ``handles`` by the physical queue (shard) each went to."""
    ids: dict[str, list[str]] = {}
    for handle in handles:
        ids.setdefault(handle.queue, []).append(handle.id)
    return ids


def check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer, got {chunk!r}")
    return chunk


def batches(subs: list[Submission], chunk: int) -> list[tuple[int, list[Submission]]]:
    """(offset, submissions) per pipelined round trip of ``map``; checked before anything
    is registered or sent."""
    check_chunk(chunk)
    return [(start, subs[start : start + chunk]) for start in range(0, len(subs), chunk)]


class Gathered:
    """Collects ``map`` results in input order under one overall deadline."""

    def __init__(self, timeout: float | None, return_exceptions: bool) -> None:
        self.timeout = timeout
        self.deadline = Deadline(timeout)  # admission and the waits share it
        self._return_exceptions = return_exceptions
        self._first_error: Exception | None = None
        self.results: list[Any] = []

    @classmethod
    def of(cls, timeout: float | None, options: MapOptions) -> Gathered:
        return cls(timeout, options.get("return_exceptions", False))

    def remaining(self) -> float | None:
        return self.deadline.remaining()

    def failed(self, error: Exception) -> None:
        if not self._return_exceptions and self._first_error is None:
            self._first_error = error
        self.results.append(error)

    def finish(self) -> list[Any]:
        if self._first_error is not None:
            raise self._first_error
        return self.results
