"""The synchronous producer's reply listener: threads popping its reply lists.

On one Redis node one thread pops every reply list of the producer with one blocking
multi-key pop; waiting requests cost no connection and no polling. On a Redis Cluster a pop
may only name keys of one slot, and each queue (or shard) has its own slot: there one thread
per queue used, each holding one connection (to that slot's node) while it blocks. Threads
per reply slot rather than per node: the slots of a node cannot share a blocking pop either.

The listener rides out a Redis outage (redis-py reconnects with backoff; one warning when it
starts, one info line when it ends) and then reads the stored results of the requests still
waiting: a reply push can be lost with a restart or a failover, the result hash is the
source of truth.
"""

from __future__ import annotations

import logging
import threading
from typing import cast

import redis
from redis.cluster import RedisCluster

from redbatch.cluster_client import dedicated, disconnect
from redbatch.connection import Client
from redbatch.producer._core import (
    LISTEN_RETRIES,
    LISTEN_SOCKET_TIMEOUT_S,
    LISTEN_TIMEOUT_S,
    RECOVER_BATCH,
    REPLY_BATCH,
    WAKE,
    WAKE_TTL_MS,
    Outage,
    ProducerCore,
    stored_outcome,
)
from redbatch.producer.handle import Handle
from redbatch.protocol.chunks import split_records
from redbatch.protocol.streams import ensure_queue

log = logging.getLogger(__name__)


class ReplyListener:
    """Resolves the handles in ``pending`` (the producer's, guarded by ``cond``) from the
    reply lists of the queues ``add``ed."""

    def __init__(
        self,
        client: Client,
        core: ProducerCore,
        cond: threading.Condition,
        pending: dict[str, Handle],
    ) -> None:
        self._client = client
        self._core = core
        self._cond = cond
        self._pending = pending
        self._cluster = isinstance(client, RedisCluster)
        # The blocking pops hold their own connections, never the client's pool's.
        self._listen_client = dedicated(
            client, socket_timeout=LISTEN_SOCKET_TIMEOUT_S, retries=LISTEN_RETRIES
        )
        self.outage = Outage()  # read by the producer's timeout path
        self._reply_keys: dict[str, str] = {}  # physical queue -> reply key, oldest first
        self._closed = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def knows(self, queue: str) -> bool:
        """Whether replies of physical queue ``queue`` are listened to (``cond`` held)."""
        return queue in self._reply_keys

    def add(self, queue: str) -> None:
        """Listen to the replies of physical queue ``queue`` (created by the caller)."""
        with self._cond:
            if queue in self._reply_keys:
                return
            first_key = next(iter(self._reply_keys.values()), None)
            self._reply_keys[queue] = self._core.reply_key(queue)
            self._cond.notify_all()
            if self._cluster or not self._threads:
                only = queue if self._cluster else None
                thread = threading.Thread(
                    target=self._listen, args=(only,),
                    name=f"redbatch-replies-{self._core.producer_id[:9]}", daemon=True,
                )  # fmt: skip
                self._threads.append(thread)
                thread.start()
        if first_key is not None and not self._cluster:
            # The listener may be blocked on the old keys: a marker on the oldest (which every
            # snapshot holds) makes it return and pick up the new key. Lock not held: I/O.
            self._wake(first_key)

    def stop(self) -> None:
        """End every listener thread and close their connections."""
        with self._cond:
            self._closed = True
            # Each cluster listener blocks on its own key; the single one on all of them.
            wake = list(self._reply_keys.values())[: None if self._cluster else 1]
            self._cond.notify_all()
        self._stopping.set()
        for key in wake:
            self._wake(key)
        for thread in self._threads:
            thread.join(timeout=1.0)
        if any(thread.is_alive() for thread in self._threads):
            # Redis did not take the wake (down?): break the blocking reads by force.
            disconnect(self._listen_client)
            for thread in self._threads:
                thread.join(timeout=1.0)
        # close() leaves a pool it was given alone: close the listener's connections here.
        disconnect(self._listen_client)
        self._listen_client.close()

    def _wake(self, key: str) -> None:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(key, WAKE)
            pipe.pexpire(key, WAKE_TTL_MS, nx=True)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "could not wake the reply listener: %s",
                exc,
                extra={"event": "listener_wake_failed"},
            )

    def _listen(self, only: str | None) -> None:
        """Pop replies until closed: of every queue, or ``only`` that one's (a cluster). A
        lost connection is redis-py's to retry (backoff with jitter, LISTEN_RETRIES attempts
        per command); between its rounds this loop only checks for a stop. Once Redis answers
        again, stored results settle what replies may have lost.
        """
        while True:
            with self._cond:
                while not self._reply_keys and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                keys = [self._reply_keys[only]] if only else list(self._reply_keys.values())
            try:
                if self.outage.active:
                    self.outage.back(self._recover())
                popped = self._listen_client.blmpop(
                    LISTEN_TIMEOUT_S, len(keys), *keys, direction="LEFT", count=REPLY_BATCH
                )
            except redis.RedisError as exc:
                if self._stopping.is_set():
                    return
                self.outage.lost(exc)
                if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    # A refusal (ACL, OOM...): redis-py does not retry these, so pause here.
                    self._stopping.wait(1.0)
                elif self._cluster:
                    # redis-py's cluster client re-reads the slot map between its attempts
                    # but does not back off: a failover takes seconds.
                    self._stopping.wait(0.1)
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
        outcomes, chunks = split_records(items)
        if chunks:  # first: a request's chunks precede its final reply
            with self._cond:
                fed = [(self._pending.get(rid), found) for rid, found in chunks.items()]
            for waiting, found in fed:
                if waiting is not None:
                    waiting._chunks(found)
        with self._cond:
            resolved = [(self._pending.pop(o.id, None), o) for o in outcomes]
        for handle, outcome in resolved:
            if handle is not None:
                handle._resolve(outcome)
