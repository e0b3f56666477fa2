"""The synchronous producer: submit requests, wait on handles, fetch results by id.

One background thread per producer listens on the producer's reply lists with a blocking
multi-key pop and resolves handles; waiting requests cost no connection and no polling.
The listener rides out a Redis outage (redis-py reconnects with backoff; one warning when it
starts, one info line when it ends) and then reads the stored results of the requests still
waiting: a reply push can be lost with a restart, the result hash is the source of truth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import redis

from redbatch.connection import address, backoff_retry, clone_kwargs, connect, ping
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
    LISTEN_RETRIES,
    LISTEN_SOCKET_TIMEOUT_S,
    LISTEN_TIMEOUT_S,
    RECOVER_BATCH,
    REPLY_BATCH,
    WAKE,
    WAKE_TTL_MS,
    Gathered,
    Outage,
    ProducerCore,
    Submission,
    batches,
    check_new_ids,
    read_replies,
    stored_outcome,
)
from redbatch.producer.handle import Handle, Latch, cancel_quietly
from redbatch.protocol import codec
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import DEFAULT_PRIORITY, check_priority, check_queue_name
from redbatch.protocol.scripts import Scripts
from redbatch.protocol.streams import ensure_queue

log = logging.getLogger(__name__)


class Producer:
    """Sends requests to queues and receives their outcomes. Thread-safe; share one."""

    def __init__(
        self,
        client: redis.Redis,
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
        # The listener's blocking pop holds its own connection, never one of the pool's.
        pool = client.connection_pool
        self._listen_client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class,
                max_connections=1,
                retry=backoff_retry(LISTEN_RETRIES),
                **clone_kwargs(client, socket_timeout=LISTEN_SOCKET_TIMEOUT_S),
            )
        )
        self._outage = Outage()  # the listener's; read by the timeout path
        self._cond = threading.Condition()
        self._pending: dict[str, Handle] = {}
        self._reply_keys: dict[str, str] = {}  # queue -> reply key, oldest first
        self._closed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "rb", **options: Any) -> Producer:
        producer = cls(connect(url), namespace=namespace, **options)
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
    ) -> Handle:
        """Add one request; ``timeout`` (s) is its deadline: workers skip it after that.
        ``priority`` (``high``, ``normal``, ``low``) picks the queue's lane (stream): workers
        serve higher lanes first; ConfigError before anything is sent for another value.

        Raises QueueFull (nothing added) when the request's lane holds ``max_queue_len``
        requests, PayloadTooLarge (nothing written) for a payload over ``max_payload_bytes``."""
        sub = self._core.submission(
            queue, payload, request_id=id, timeout=timeout, cost=cost, priority=priority
        )
        self._use_queue(sub.queue)
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
        """Submit many (one atomic admission of ``chunk`` requests per round trip); results
        in input order.

        With ``return_exceptions`` a failed request's exception takes its place in the list;
        otherwise the first failure (in input order) is raised once every request has ended
        or ``timeout`` passed (then, with ``cancel_on_timeout``, the requests of this call
        still waiting are cancelled). Every payload is encoded before anything is sent. A
        full queue raises MapQueueFull (a QueueFull): the chunks admitted before it still
        run, and its ``admitted`` lists their handles.
        """
        check_priority(priority)
        subs = [
            self._core.submission(queue, p, timeout=timeout, priority=priority) for p in payloads
        ]
        rounds = batches(subs, chunk)
        if not subs:
            return []
        self._use_queue(subs[0].queue)
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
        return self._gather(handles, Gathered(timeout, return_exceptions))

    def cancel(self, queue: str, id: str) -> None:
        """Cancel request ``id`` of ``queue`` (any producer's, from any process): a worker that
        has not started it gives it to no handler, it ends ``cancelled`` and its ``result()``
        raises RequestCancelled. A request already running or finished keeps its outcome."""
        self._cancel_ids(queue, [id])

    # -- results by id ----------------------------------------------------------------

    def get_result(self, queue: str, id: str) -> Any:
        """The stored outcome of request ``id`` from any process, until its TTL ends."""
        key = self._core.keyspace.queue(queue).result(id)
        try:
            fields: dict[bytes, bytes] = self._client.hgetall(key)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot read result {id} of queue {queue}: {exc}") from None
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
            pending, self._pending = self._pending, {}
            first_key = next(iter(self._reply_keys.values()), None)
            self._cond.notify_all()
        self._stopping.set()
        if self._thread is not None:
            if first_key is not None:
                self._wake(first_key)
            self._thread.join(timeout=1.0)
            if self._thread.is_alive():
                # Redis did not take the wake (down?): break the blocking read by force.
                self._listen_client.connection_pool.disconnect()
                self._thread.join(timeout=1.0)
        for handle in pending.values():
            handle._fail(ProducerClosed(f"producer closed before request {handle.id} ended"))
        # close() leaves a pool it was given alone: close the listener's connection here.
        self._listen_client.connection_pool.disconnect()
        self._listen_client.close()
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
        if self._outage.active:
            log.debug("Redis unavailable: not cancelling %d timed-out request(s)", len(ids))
            return
        self._cancel_ids(queue, ids)

    def _gather(self, handles: list[Handle], gathered: Gathered) -> list[Any]:
        """``handles`` share one latch (``_register``): one wait for all of them."""
        if not handles[0]._latch.wait_all(gathered.remaining()):
            waiting = [h for h in handles if not h.done()]
            if waiting:
                if self._core.cancel_on_timeout:
                    ids = [h.id for h in waiting]
                    cancel_quietly(self._cancel_timed_out, waiting[0].queue, ids)
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

    def _use_queue(self, queue: str) -> None:
        check_queue_name(queue)
        with self._cond:
            if queue in self._reply_keys:
                return
        keys = self._core.keyspace.queue(queue)
        try:
            ensure_queue(self._client, self._core.keyspace, keys)
        except redis.RedisError as exc:
            raise ConnectionFailed(f"cannot create queue {queue}: {exc}") from None
        with self._cond:
            if queue in self._reply_keys:
                return
            first_key = next(iter(self._reply_keys.values()), None)
            self._reply_keys[queue] = self._core.reply_key(queue)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._listen, name=f"redbatch-replies-{self.id[:9]}", daemon=True
                )
                self._thread.start()
        if first_key is not None:
            # The listener may be blocked on the old keys: a marker on the oldest (which every
            # snapshot holds) makes it return and pick up the new key. Lock not held: I/O.
            self._wake(first_key)

    def _wake(self, key: str) -> None:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, WAKE)
            pipe.pexpire(key, WAKE_TTL_MS, nx=True)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not wake the reply listener: %s", exc)

    def _listen(self) -> None:
        """Pop replies until closed. A lost connection is redis-py's to retry (backoff with
        jitter, LISTEN_RETRIES attempts per command); between its rounds this loop only checks
        for a stop. Once Redis answers again, stored results settle what replies may have lost.
        """
        while True:
            with self._cond:
                while not self._reply_keys and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                keys = list(self._reply_keys.values())
            try:
                if self._outage.active:
                    self._outage.back(self._recover())
                popped = self._listen_client.blmpop(
                    LISTEN_TIMEOUT_S, len(keys), *keys, direction="LEFT", count=REPLY_BATCH
                )
            except redis.RedisError as exc:
                if self._stopping.is_set():
                    return
                self._outage.lost(exc)
                if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    # A refusal (ACL, OOM...): redis-py does not retry these, so pause here.
                    self._stopping.wait(1.0)
                continue
            if popped:
                self._dispatch(cast(list[bytes], popped[1]))

    def _recover(self) -> int:
        """After an outage: recreate the queues (Redis may have restarted empty) and resolve
        every waiting handle whose result is stored; returns how many were resolved."""
        with self._cond:
            queues = list(self._reply_keys)
            waiting = list(self._pending.values())
        for queue in queues:
            ensure_queue(self._listen_client, self._core.keyspace, self._core.keyspace.queue(queue))
        resolved = 0
        for start in range(0, len(waiting), RECOVER_BATCH):
            part = waiting[start : start + RECOVER_BATCH]
            pipe = self._listen_client.pipeline(transaction=False)
            for handle in part:
                pipe.hgetall(self._core.keyspace.queue(handle.queue).result(handle.id))
            rows = pipe.execute()
            found = [(h, stored_outcome(h.id, f)) for h, f in zip(part, rows, strict=True)]
            with self._cond:
                ready = [(h, o) for h, o in found if o is not None and self._claim(h)]
            for handle, outcome in ready:
                handle._resolve(outcome)
            resolved += len(ready)
        return resolved

    def _claim(self, handle: Handle) -> bool:
        """Take ``handle`` off the waiting list if it is still there (lock held)."""
        if self._pending.get(handle.id) is not handle:
            return False
        del self._pending[handle.id]
        return True

    def _dispatch(self, items: list[bytes]) -> None:
        outcomes = read_replies(items)
        with self._cond:
            resolved = [(self._pending.pop(o.id, None), o) for o in outcomes]
        for handle, outcome in resolved:
            if handle is not None:
                handle._resolve(outcome)
