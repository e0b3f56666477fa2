"""The started mark: claiming a batch's entries again (delivery count 2 = started) with the
cancel check that rides along (docs/wire-contract.md, "What a worker does" and "Cancellation").

Waited for (``start``), or sent now and answered later (``start_unconfirmed``, with its
arguments built ahead by ``start_args`` and the early check ``cancelled_now``), as
``worker.starting`` decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from redbatch.protocol.fields import STARTED_DELIVERIES, Request
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.transport.connection import Client
from redbatch.transport.packed import (
    Packed,
    claim_commands,
    claim_then_get,
    pack,
    send_packed,
)
from redbatch.transport.topology import topology_of


class Marks:
    def __init__(self, client: Client, keyspace: KeySpace, worker_name: str) -> None:
        self._client = client
        self._topology = topology_of(client)
        self._keyspace = keyspace
        self._worker = worker_name

    def start(self, queue: str, requests: list[Request]) -> frozenset[str]:
        """Mark the batch started and return the ids cancelled meanwhile (one round trip).

        Started = delivery count 2 in the group's pending list: the scheduler counts an
        attempt against a dead worker's entry only when it was started, so entries a worker
        merely held (read, or about to be handed back) when it was killed keep their attempt
        and no request nobody ever ran is dead-lettered for other requests' crashes."""
        claims, cancel_keys = self._start_args(queue, requests)
        flags = claim_then_get(
            self._client, claims, cancel_keys,
            group=GROUP, consumer=self._worker, retry_count=STARTED_DELIVERIES,
        )  # fmt: skip
        return _flagged(requests, flags)

    def start_unconfirmed(
        self, prepared: StartArgs, *, retry: bool = True
    ) -> Callable[[], frozenset[str]] | None:
        """``start`` of ``prepared`` (``start_args``) sent now and answered later: the call
        returned reads the ids cancelled since the early check. The mark is in the socket
        when this returns, so the handler may start at once: a crash from then on still
        counts the attempt. None on a Redis Cluster (redis-py's pipeline routes the
        commands; ``start`` it is). ``retry=False``: a lost connection raises at once."""
        if self._topology.cluster:
            return None
        assert isinstance(self._client, redis.Redis)
        read = send_packed(self._client, prepared.packed, retry=retry)
        requests = prepared.requests
        return lambda: _flagged(requests, list(read()[-1]))

    @property
    def starts_unconfirmed(self) -> bool:
        """Whether ``start_unconfirmed`` can send (one node, not a cluster)."""
        return not self._topology.cluster

    def start_args(self, queue: str, requests: list[Request]) -> StartArgs:
        """What ``start_unconfirmed`` sends, built ahead (while the batch before runs)."""
        claims, cancel_keys = self._start_args(queue, requests)
        commands = claim_commands(claims, cancel_keys, GROUP, self._worker, STARTED_DELIVERIES)
        return StartArgs(requests, pack(commands))

    def cancelled_now(self, queue: str, requests: list[Request]) -> frozenset[str]:
        """The ids of ``requests`` cancelled by now (one ``MGET``): the early check of batch
        N+1, made while N runs, so that N+1 can start without waiting for its mark."""
        cancel_at = self._keyspace.queue(queue).cancel("")
        return _flagged(requests, self._client.mget([cancel_at + r.id for r in requests]))

    def _start_args(
        self, queue: str, requests: list[Request]
    ) -> tuple[list[tuple[str, list[str]]], list[str]]:
        """(stream, entry ids) per lane to claim, and the requests' cancel keys."""
        keys = self._keyspace.queue(queue)
        by_lane: dict[str, list[str]] = {}
        lanes = {r.priority for r in requests}
        if len(lanes) == 1:  # the common case: one lane, no dict work per request
            by_lane[lanes.pop()] = [r.entry_id for r in requests]
        else:
            for r in requests:
                # parse_entry gave each request the lane (priority stream) it was read from.
                by_lane.setdefault(r.priority, []).append(r.entry_id)
        claims = [(keys.stream_for(priority), ids) for priority, ids in by_lane.items()]
        cancel_at = keys.cancel("")
        return claims, [cancel_at + r.id for r in requests]


@dataclass(frozen=True, slots=True)
class StartArgs:
    """A started mark built ahead: its requests, and its commands packed (the claims, then
    the ``MGET`` of the cancel keys)."""

    requests: list[Request]
    packed: Packed


def _flagged(requests: list[Request], flags: list[Any]) -> frozenset[str]:
    """The ids of ``requests`` whose cancel key (``flags``, an MGET's reply) is set."""
    if not any(flags):
        return frozenset()
    return frozenset(r.id for r, flag in zip(requests, flags, strict=True) if flag)
