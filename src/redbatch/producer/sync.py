"""The synchronous producer: submit requests, wait on handles, fetch results by id.

A ``ReplyListener`` (``producer.listener``) resolves the handles from the producer's reply
lists: one blocking pop on one node, one per queue or shard on a cluster; waiting requests
cost no connection and no polling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import redis

from redbatch.cluster_client import connect_any
from redbatch.connection import Client, address, ping, redis_failure
from redbatch.errors import (
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
    check_new_ids,
    on_shards,
)
from redbatch.producer.admission import Admissions, Deadline
from redbatch.producer.chunk_feed import RAISE, check_resume
from redbatch.producer.chunk_reader import read_stream
from redbatch.producer.handle import Handle, Latch
from redbatch.producer.listener import ReplyListener
from redbatch.producer.overdue import Overdue
from redbatch.producer.routing import Routes
from redbatch.protocol import codec
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import (
    DEFAULT_PRIORITY,
    check_priority,
    check_request_id,
)
from redbatch.protocol.scripts import Scripts

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
        self._admissions = Admissions(self._core.producer_id)
        self._cond = threading.Condition()
        self._pending: dict[str, Handle] = {}
        self._listener = ReplyListener(client, self._core, self._cond, self._pending)
        self._routes = Routes(client, self._core, self._listener, self._cond)
        self._overdue = Overdue(
            self._core, self._scripts, self._routes, self._cancel_ids, self._unregister,
            self._listener.outage,
        )  # fmt: skip
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
        stream: bool = False,
    ) -> Handle:
        """Add one request; ``timeout`` (s) is its deadline: workers skip it after that.
        ``priority`` (``high``, ``normal``, ``low``) picks the queue's lane (stream): workers
        serve higher lanes first; ConfigError before anything is sent for another value.
        On a sharded queue, requests go to its shards in turn, or all requests with the same
        ``shard_key`` to the same shard (``handle.queue`` names the shard).

        Raises QueueFull (nothing added) when the request's lane holds ``max_queue_len``
        requests, PayloadTooLarge (nothing written) for a payload over ``max_payload_bytes``,
        RedisRefused when Redis refuses for now (out of memory...), ResultTimeout when Redis
        has not confirmed the admission within ``timeout`` (the request may have been added:
        with ``cancel_on_timeout`` it is then cancelled). ``stream``: a streaming handler's
        chunks come as they are made, for ``handle.stream()``."""
        deadline = Deadline(timeout)
        return self._submit(queue, payload, deadline, id=id, cost=cost, priority=priority, shard_key=shard_key, stream=stream)  # fmt: skip  # noqa: E501

    def stream(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = None,
        resume: str = RAISE,
        **submit: Any,
    ) -> Iterator[Any]:
        """``submit(..., stream=True)`` then ``handle.stream(timeout, resume=resume)``: yields
        the request's chunks as a streaming handler makes them. ``submit`` takes the other
        options of ``submit`` (``id``, ``cost``, ``priority``, ``shard_key``)."""
        check_resume(resume)
        handle = self.submit(queue, payload, timeout=timeout, stream=True, **submit)
        return handle.stream(timeout, resume=resume)

    def stream_from(
        self,
        queue: str,
        id: str,
        *,
        after: tuple[int, int] = (0, -1),
        timeout: float | None = None,
        resume: str = RAISE,
    ) -> Iterator[Any]:
        """Read request ``id``'s chunks from where a reader left off (``after``: the
        ``handle.position`` it had), from this or any process, out of the kept chunks, then
        end with its outcome as ``stream()`` does. For a producer that reconnects mid-stream.
        """
        return read_stream(self._client, self._core, queue, id, after, timeout, resume)

    def _submit(
        self,
        queue: str,
        payload: Any,
        deadline: Deadline,
        *,
        id: str | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
        shard_key: str | bytes | None = None,
        stream: bool = False,
    ) -> Handle:
        sub = self._core.submission(
            queue, payload, request_id=id, timeout=deadline.timeout, cost=cost,
            priority=priority, stream=stream,
        )  # fmt: skip
        once = id is not None

        def admit() -> list[Handle]:
            [routed] = on_shards([sub], self._routes.route(queue, 1, shard_key, deadline), 1)
            handles = self._register([routed], once=once)
            try:
                self._admit([routed], deadline, once=once)
            except BaseException:
                self._unregister(handles)
                raise
            return handles

        return self._overdue.within(deadline, admit, queue, [sub], once)[0]

    def call(
        self,
        queue: str,
        payload: Any,
        *,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
    ) -> Any:
        """Submit and wait: ``timeout`` is both the request's deadline and the bound of the
        whole call (admission included)."""
        deadline = Deadline(timeout)
        handle = self._submit(queue, payload, deadline, cost=cost, priority=priority)
        return handle._result(deadline.remaining(), timeout)

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
        gathered = Gathered(timeout, return_exceptions)
        handles = self._submit_many(queue, payloads, gathered.deadline, chunk, priority)
        if not handles:
            return []
        return self._gather(handles, gathered)

    def submit_many(
        self,
        queue: str,
        payloads: Iterable[Any],
        *,
        timeout: float | None = None,
        chunk: int = 500,
        priority: str = DEFAULT_PRIORITY,
        stream: bool = False,
    ) -> list[Handle]:
        """Submit many without waiting: one atomic admission of ``chunk`` requests per round
        trip, a handle per request (input order), for callers that want each request's own
        outcome as it comes (``map`` waits for all). Every payload is encoded before anything
        is sent. A full queue raises MapQueueFull (a QueueFull): the chunks admitted before it
        still run, and its ``admitted`` lists their handles. On a sharded queue the chunks go
        to its shards in turn. Admission ends by ``timeout`` (ResultTimeout, and every request
        of the call cancelled with ``cancel_on_timeout``).
        """
        return self._submit_many(queue, payloads, Deadline(timeout), chunk, priority, stream)

    def _submit_many(
        self,
        queue: str,
        payloads: Iterable[Any],
        deadline: Deadline,
        chunk: int,
        priority: str,
        stream: bool = False,
    ) -> list[Handle]:
        check_priority(priority)
        timeout = deadline.timeout
        subs = [
            self._core.submission(queue, p, timeout=timeout, priority=priority, stream=stream)
            for p in payloads
        ]
        rounds = batches(subs, chunk)
        if not subs:
            return []

        def admit() -> list[Handle]:
            routed = on_shards(subs, self._routes.route(queue, len(rounds), None, deadline), chunk)
            handles = self._register(routed)
            for start, batch in batches(routed, chunk):
                try:
                    self._admit(batch, deadline)
                except QueueFull as full:
                    self._unregister(handles[start:])
                    raise MapQueueFull(full, handles[:start]) from None
                except BaseException:
                    self._unregister(handles[start:] if not deadline.passed() else handles)
                    raise
            return handles

        return self._overdue.within(deadline, admit, queue, subs)

    def cancel(self, queue: str, id: str) -> None:
        """Cancel request ``id`` of ``queue`` (any producer's, from any process): a worker that
        has not started it gives it to no handler, it ends ``cancelled`` and its ``result()``
        raises RequestCancelled. A request already running or finished keeps its outcome.
        On a sharded queue the id is marked cancelled in every shard (the id alone does
        not say which shard holds it)."""
        for name in self._routes.served(queue):
            self._cancel_ids(name, [id])

    # -- results by id ----------------------------------------------------------------

    def get_result(self, queue: str, id: str) -> Any:
        """The stored outcome of request ``id`` from any process, until its TTL ends (on a
        sharded queue, looked up in every shard)."""
        names = self._routes.served(queue)
        keyspace = self._core.keyspace
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(keyspace.queue(name).result(check_request_id(id)))
            found: list[dict[bytes, bytes]] = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure(f"cannot read result {id} of queue {queue}", exc) from None
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
        self._overdue.stop()
        for handle in pending:
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
        if self._owns_client:
            self._client.close()

    # -- internals ----------------------------------------------------------------------

    def _register(self, subs: list[Submission], once: bool = False) -> list[Handle]:
        ct = self._core.content_type
        latch = Latch(len(subs))
        core, cancel, timed_out = self._core, self._cancel_ids, self._overdue.timed_out
        handles = [
            Handle(core, cancel, s.queue, s.request_id, ct, timed_out, latch, once) for s in subs
        ]
        with self._cond:
            if self._closed:
                raise ProducerClosed("producer is closed")
            check_new_ids(self._pending, [h.id for h in handles])
            for handle in handles:
                self._pending[handle.id] = handle
        return handles

    def _admit(self, subs: list[Submission], deadline: Deadline, *, once: bool = False) -> None:
        """One admission call: all of ``subs`` are added, or none (QueueFull). ``once``: a
        single request with a caller-chosen id, admitted idempotently (admit_once.lua).
        Re-sent after a lost reply at most until ``deadline`` (then ResultTimeout); Redis
        applies it once (its sequence number, or the id's guard)."""
        queue = subs[0].queue
        admission = self._admissions.open()
        name, keys, args = self._core.admission(subs, once=once, admission=admission)
        script = getattr(self._scripts, name)
        try:
            if deadline.at is None:
                reply = script(keys=keys, args=args)
            else:
                reply = script(keys=keys, args=args, deadline=deadline.at)
        except redis.RedisError as exc:
            if deadline.passed():
                raise ResultTimeout(subs[0].request_id, deadline.timeout or 0.0) from None
            raise redis_failure(f"cannot submit to queue {queue}", exc) from None
        finally:
            self._admissions.close(admission)
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
            raise redis_failure(f"cannot cancel requests of queue {queue}", exc) from None

    def _gather(self, handles: list[Handle], gathered: Gathered) -> list[Any]:
        """``handles`` share one latch (``_register``): one wait for all of them."""
        if not handles[0]._latch.wait_all(gathered.remaining()):
            waiting = [h for h in handles if not h.done()]
            if waiting:
                self._overdue.timed_out(waiting)
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
