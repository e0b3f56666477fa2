"""The synchronous producer: submit requests, wait on handles, fetch results by id.

A ``ReplyListener`` (``producer.listener``) resolves the handles from the producer's reply
lists: one blocking pop on one node, one per queue or shard on a cluster; waiting requests
cost no connection and no polling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import redis

from redbatch.cluster_client import connect_any
from redbatch.connection import Client, address, ping
from redbatch.errors import (
    ConnectionFailed,
    MapQueueFull,
    ProducerClosed,
    QueueFull,
    ResultNotFound,
    ResultTimeout,
)
from redbatch.producer._core import (
    CANCEL_MARK,
    CANCEL_TTL_MS,
    DEFAULT_MAX_QUEUE_LEN,
    Gathered,
    ProducerCore,
    Submission,
    batches,
    by_queue,
    check_new_ids,
    on_shards,
)
from redbatch.producer.handle import Handle, Latch, cancel_quietly
from redbatch.producer.listener import ReplyListener
from redbatch.protocol import codec
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import (
    DEFAULT_PRIORITY,
    check_priority,
    check_queue_name,
    check_request_id,
)
from redbatch.protocol.scripts import Scripts
from redbatch.protocol.shards import ShardRouter, read_shards, served_names
from redbatch.protocol.streams import ensure_queue

log = logging.getLogger(__name__)


class Producer:
    """Sends requests to queues and receives their outcomes. Thread-safe; share one."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "rb",
        content_type: str = codec.MSGPACK,
        max_payload_bytes: int = codec.DEFAULT_LIMITS.max_payload_bytes,
        max_queue_len: int = DEFAULT_MAX_QUEUE_LEN,
        cancel_on_timeout: bool = True,
    ) -> None:
        """``max_queue_len``: requests one priority lane of a queue may hold (waiting or in
        flight) before a submit to that lane raises QueueFull (0 = no bound); each lane is
        bounded by itself, so low-priority requests never crowd out high ones.
        ``cancel_on_timeout``: a ``result``, ``call`` or ``map`` whose local wait times out
        cancels its requests, so no worker computes what nobody waits for."""
        self._client = client
        self._owns_client = False
        self._core = ProducerCore(
            namespace,
            content_type=content_type,
            max_payload_bytes=max_payload_bytes,
            max_queue_len=max_queue_len,
            cancel_on_timeout=cancel_on_timeout,
        )
        self._scripts = Scripts(client)
        self._cond = threading.Condition()
        self._pending: dict[str, Handle] = {}
        self._listener = ReplyListener(client, self._core, self._cond, self._pending)
        self._router = ShardRouter()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str = "rb", cluster: bool | None = None, **options: Any
    ) -> Producer:
        """A producer on its own client; ``cluster`` None: a Redis Cluster when the server
        says it is one (its HELLO reply, as INFO cluster)."""
        producer = cls(connect_any(url, cluster=cluster), namespace=namespace, **options)
        producer._owns_client = True
        return producer

    @property
    def id(self) -> str:
        return self._core.producer_id

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Raise ConnectionFailed (one readable line) if Redis cannot be used."""
        ping(self._client, address(self._client))

    # -- submitting ---------------------------------------------------------------------

    def submit(
        self,
        queue: str,
        payload: Any,
        *,
        id: str | None = None,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
        shard_key: str | bytes | None = None,
    ) -> Handle:
        """Add one request; ``timeout`` (s) is its deadline: workers skip it after that.
        ``priority`` (``high``, ``normal``, ``low``) picks the queue's lane (stream): workers
        serve higher lanes first; ConfigError before anything is sent for another value.
        On a sharded queue, requests go to its shards in turn, or all requests with the same
        ``shard_key`` to the same shard (``handle.queue`` names the shard).

        Raises QueueFull (nothing added) when the request's lane holds ``max_queue_len``
        requests, PayloadTooLarge (nothing written) for a payload over ``max_payload_bytes``."""
        sub = self._core.submission(
            queue, payload, request_id=id, timeout=timeout, cost=cost, priority=priority
        )
        [sub] = on_shards([sub], self._route(queue, 1, shard_key), 1)
        [handle] = self._register([sub])
        try:
            self._admit([sub], once=id is not None)
        except (ConnectionFailed, QueueFull):
            self._unregister([handle])
            raise
        return handle

    def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
    ) -> Any:
        """Submit and wait: ``timeout`` is both the request's deadline and the local wait."""
        handle = self.submit(queue, payload, timeout=timeout, cost=cost, priority=priority)
        return handle.result(timeout)

    def map(
        self,
        queue: str,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        chunk: int = 500,
        return_exceptions: bool = False,
        priority: str = DEFAULT_PRIORITY,
    ) -> list[Any]:
        """Submit many (``submit_many``) and wait for them all; results in input order.

        With ``return_exceptions`` a failed request's exception takes its place in the list;
        otherwise the first failure (in input order) is raised once every request has ended
        or ``timeout`` passed (then, with ``cancel_on_timeout``, the requests of this call
        still waiting are cancelled).
        """
        handles = self.submit_many(queue, payloads, timeout=timeout, chunk=chunk, priority=priority)
        if not handles:
            return []
        return self._gather(handles, Gathered(timeout, return_exceptions))

    def submit_many(
        self,
        queue: str,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        chunk: int = 500,
        priority: str = DEFAULT_PRIORITY,
    ) -> list[Handle]:
        """Submit many without waiting: one atomic admission of ``chunk`` requests per round
        trip, a handle per request (input order), for callers that want each request's own
        outcome as it comes (``map`` waits for all). Every payload is encoded before anything
        is sent. A full queue raises MapQueueFull (a QueueFull): the chunks admitted before it
        still run, and its ``admitted`` lists their handles. On a sharded queue the chunks go
        to its shards in turn.
        """
        check_priority(priority)
        subs = [
            self._core.submission(queue, p, timeout=timeout, priority=priority) for p in payloads
        ]
        rounds = batches(subs, chunk)
        if not subs:
            return []
        subs = on_shards(subs, self._route(queue, len(rounds)), chunk)
        rounds = batches(subs, chunk)
        handles = self._register(subs)
        for start, batch in rounds:
            try:
                self._admit(batch)
            except ConnectionFailed:
                self._unregister(handles[start:])
                raise
            except QueueFull as full:
                self._unregister(handles[start:])
                raise MapQueueFull(full, handles[:start]) from None
        return handles

    def cancel(self, queue: str, id: str) -> None:
        """Cancel request ``id`` of ``queue`` (any producer's, from any process): a worker that
        has not started it gives it to no handler, it ends ``cancelled`` and its ``result()``
        raises RequestCancelled. A request already running or finished keeps its outcome.
        On a sharded queue the id is marked cancelled in every shard (the id alone does
        not say which shard holds it)."""
        for name in self._served(queue):
            self._cancel_ids(name, [id])

    # -- results by id ----------------------------------------------------------------

    def get_result(self, queue: str, id: str) -> Any:
        """The stored outcome of request ``id`` from any process, until its TTL ends (on a
        sharded queue, looked up in every shard)."""
        names = self._served(queue)
        keyspace = self._core.keyspace
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(keyspace.queue(name).result(check_request_id(id)))
            found: list[dict[bytes, bytes]] = pipe.execute()
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot read result {id} of queue {queue}: {exc}") from None
        fields = next((f for f in found if f), None)
        if not fields:
            raise ResultNotFound(queue, id)
        outcome, ct = outcome_from_result(id, fields)
        return self._core.value(outcome, ct)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the listener; every handle still waiting raises ProducerClosed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()  # the listener's dict too: it resolves nothing more
        self._listener.stop()
        for handle in pending:
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
        if self._owns_client:
            self._client.close()

    # -- internals ----------------------------------------------------------------------

    def _register(self, subs: list[Submission]) -> list[Handle]:
        ct = self._core.content_type
        latch = Latch(len(subs))
        core, cancel, timed_out = self._core, self._cancel_ids, self._cancel_timed_out
        handles = [Handle(core, cancel, s.queue, s.request_id, ct, timed_out, latch) for s in subs]
        with self._cond:
            if self._closed:
                raise ProducerClosed("producer is closed")
            check_new_ids(self._pending, [h.id for h in handles])
            for handle in handles:
                self._pending[handle.id] = handle
        return handles

    def _admit(self, subs: list[Submission], *, once: bool = False) -> None:
        """One admission call: all of ``subs`` are added, or none (QueueFull). ``once``: a
        single request with a caller-chosen id, admitted idempotently (admit_once.lua)."""
        queue = subs[0].queue
        name, keys, args = self._core.admission(subs, once=once)
        script = getattr(self._scripts, name)
        try:
            reply = script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot submit to queue {queue}: {exc}") from None
        full = self._core.refusal(queue, reply, subs[0].priority)
        if full is not None:
            raise full

    def _cancel_ids(self, queue: str, ids: list[str]) -> None:
        keys = self._core.cancel_keys(queue, ids)
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, CANCEL_MARK, px=CANCEL_TTL_MS)
            pipe.execute()
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot cancel requests of queue {queue}: {exc}") from None

    def _cancel_timed_out(self, queue: str, ids: list[str]) -> None:
        """cancel_on_timeout, best effort: skipped while the listener knows Redis is down, so
        a timed-out wait raises ResultTimeout at its timeout, not after redis-py's retries."""
        if self._listener.outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(ids))
            return
        self._cancel_ids(queue, ids)

    def _gather(self, handles: list[Handle], gathered: Gathered) -> list[Any]:
        """``handles`` share one latch (``_register``): one wait for all of them."""
        if not handles[0]._latch.wait_all(gathered.remaining()):
            waiting = [h for h in handles if not h.done()]
            if waiting:
                if self._core.cancel_on_timeout:
                    for queue, ids in by_queue(waiting).items():  # one per shard
                        cancel_quietly(self._cancel_timed_out, queue, ids)
                raise ResultTimeout(waiting[0].id, gathered.timeout or 0.0)
        for handle in handles:
            try:
                gathered.results.append(handle._value())
            except Exception as exc:
                gathered.failed(exc)
        return gathered.finish()

    def _unregister(self, handles: list[Handle]) -> None:
        with self._cond:
            for handle in handles:
                self._pending.pop(handle.id, None)

    def _route(self, queue: str, count: int, shard_key: str | bytes | None = None) -> list[str]:
        """The physical queues (shards) of ``count`` admissions to ``queue``, each created
        and listened to; re-reads the shard count when it is older than shards.REFRESH_S."""
        check_queue_name(queue)
        self._refresh_shards(queue)
        names = self._router.pick(queue, count, shard_key)
        for name in dict.fromkeys(names):
            self._use_queue(name)
        return names

    def _served(self, queue: str) -> tuple[str, ...]:
        check_queue_name(queue)
        self._refresh_shards(queue)
        return served_names(queue, self._router.shards(queue))

    def _refresh_shards(self, queue: str) -> None:
        if self._router.stale(queue):
            try:
                self._router.update(queue, read_shards(self._client, self._core.keyspace, queue))
            except redis.RedisError as exc:
                raise ConnectionFailed(f"cannot read the config of queue {queue}: {exc}") from None

    def _use_queue(self, queue: str) -> None:
        """Create physical queue ``queue`` (a queue or a shard) and listen on its replies."""
        with self._cond:
            if self._listener.knows(queue):
                return
        keys = self._core.keyspace.queue(queue)
        try:
            ensure_queue(self._client, self._core.keyspace, keys)
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot create queue {queue}: {exc}") from None
        self._listener.add(queue)
