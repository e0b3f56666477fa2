"""A producer's reply listener: loops popping its reply lists, run by a thread (``Producer``)
or a task (``AsyncProducer``); what a loop does is one flow (``Listening.listen``).

On one Redis node one loop pops every reply list of the producer with one blocking
multi-key pop; waiting requests cost no connection and no polling. On a Redis Cluster a pop
may only name keys of one slot, and each queue (or shard) has its own slot: there one loop
per queue used, each holding one connection (to that slot's node) while it blocks.

The listener rides out a Redis outage (redis-py reconnects with backoff; one warning when it
starts, one info line when it ends) and then reads the stored results of the requests still
waiting: a reply push can be lost with a restart or a failover, the result hash is the
source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis

from redbatch.errors import RedbatchError, RedisRefused
from redbatch.producer import plans
from redbatch.producer._core import (
    LISTEN_RETRIES,
    LISTEN_SOCKET_TIMEOUT_S,
    LISTEN_TIMEOUT_S,
    RECOVER_BATCH,
    Outage,
    ProducerCore,
    stored_outcome,
)
from redbatch.producer.handle import BaseHandle
from redbatch.producer.plans import Flow, Pause, Steps
from redbatch.producer.runners import run, run_async
from redbatch.protocol.chunks import split_records
from redbatch.protocol.fields import Outcome
from redbatch.transport.cluster import dedicated, dedicated_async, disconnect
from redbatch.transport.connection import AsyncClient, Client
from redbatch.transport.topology import Topology

log = logging.getLogger(__name__)

# A loop with no reply list to pop yet waits for one to be added.
_FOR_KEYS = Pause(-1.0)


@dataclass(frozen=True, slots=True)
class Added:
    """What adding a queue asks of the listener: a new loop (for queue ``only``, or every
    queue when None) and a wake marker on ``wake`` (a blocked loop re-reads its keys)."""

    start: bool
    only: str | None
    wake: str | None


class Listening:
    """The reply lists listened to, and the flow of one loop: resolves the handles in
    ``pending`` (the producer's, guarded by ``cond``)."""

    def __init__(
        self,
        core: ProducerCore,
        cond: threading.Condition,
        pending: dict[str, Any],
        topology: Topology,
    ) -> None:
        self.core = core
        self.cond = cond
        self.pending = pending
        self.topology = topology
        self.outage = Outage()  # read by the producer's timeout path
        self.reply_keys: dict[str, str] = {}  # physical queue -> reply key, oldest first
        self.closed = False
        self.loops = 0

    def knows(self, queue: str) -> bool:
        return queue in self.reply_keys

    def add(self, queue: str) -> Added:
        with self.cond:
            if queue in self.reply_keys:
                return Added(False, None, None)
            first_key = next(iter(self.reply_keys.values()), None)
            self.reply_keys[queue] = self.core.reply_key(queue)
            self.cond.notify_all()
            start = self.apart or self.loops == 0
            self.loops += start
        # The single loop may be blocked on the old keys: a marker on the oldest (which
        # every snapshot holds) makes it return and pick up the new key.
        wake = first_key if not self.apart else None
        return Added(start, queue if self.apart else None, wake)

    @property
    def apart(self) -> bool:
        """A loop per queue: a pop may name keys of one slot only (a cluster)."""
        return not self.topology.multi_slot

    def close(self) -> list[str]:
        """Stop every loop; the keys to wake (each cluster loop blocks on its own key, the
        single one on all of them)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            return list(self.reply_keys.values())[: None if self.apart else 1]

    def listen(self, only: str | None, block_s: float) -> Flow[None]:
        """Pop replies until closed: of every queue, or ``only`` that one's (``apart``). A
        lost connection is redis-py's to retry (backoff with jitter, LISTEN_RETRIES attempts
        per command); between its rounds this loop only checks for a stop. Once Redis
        answers again, stored results settle what replies may have lost."""
        while True:
            with self.cond:
                if self.closed:
                    return
                keys = [self.reply_keys[only]] if only else list(self.reply_keys.values())
            if not keys:
                yield _FOR_KEYS
                continue
            try:
                if self.outage.active:
                    self.outage.back((yield from self.recover()))
                items = yield plans.pop_replies(keys, block_s)
            except RedbatchError as exc:
                if self.closed:
                    return
                self.outage.lost(exc)
                yield Pause(self._pause_after(exc))
                continue
            self.dispatch(items)

    def _pause_after(self, exc: RedbatchError) -> float:
        if isinstance(exc, RedisRefused) or not isinstance(
            exc.__context__, redis.ConnectionError | redis.TimeoutError
        ):
            return 1.0  # a refusal (ACL, OOM...): redis-py does not retry these
        return self.topology.lost_pause_s

    def recover(self) -> Flow[int]:
        """After an outage: recreate the queues (Redis may have restarted empty) and resolve
        every waiting handle whose result is stored; returns how many were resolved."""
        keyspace = self.core.keyspace
        with self.cond:
            queues = list(self.reply_keys)
            waiting: list[BaseHandle] = list(self.pending.values())
        for queue in queues:
            yield plans.ensure_queue(keyspace, keyspace.queue(queue))
        resolved = 0
        for start in range(0, len(waiting), RECOVER_BATCH):
            part = waiting[start : start + RECOVER_BATCH]
            rows = yield plans.stored_results(keyspace, [(h.queue, h.id) for h in part])
            found = [(h, stored_outcome(h.id, f)) for h, f in zip(part, rows, strict=True)]
            with self.cond:
                ready = [(h, o) for h, o in found if o is not None and self._claim(h)]
            self._resolve(ready)
            resolved += len(ready)
        return resolved

    def _claim(self, handle: BaseHandle) -> bool:
        """Take ``handle`` off the waiting list if it is still there (lock held)."""
        if self.pending.get(handle.id) is not handle:
            return False
        del self.pending[handle.id]
        return True

    def dispatch(self, items: list[bytes]) -> None:
        outcomes, chunks = split_records(items)
        if chunks:  # first: a request's chunks precede its final reply
            with self.cond:
                fed = [(self.pending.get(rid), found) for rid, found in chunks.items()]
            for waiting, found in fed:
                if waiting is not None:
                    waiting._chunks(found)
        with self.cond:
            resolved = [(self.pending.pop(o.id, None), o) for o in outcomes]
        for handle, outcome in resolved:
            if handle is not None:
                handle._resolve(outcome)
        if self.core.metrics is not None:
            self.core.metrics.ended([(h, o) for h, o in resolved if h is not None])

    def _resolve(self, ready: list[tuple[Any, Outcome]]) -> None:
        for handle, outcome in ready:
            handle._resolve(outcome)
        if self.core.metrics is not None:
            self.core.metrics.ended(ready)


def _wake_quietly(client: Any, key: str) -> None:
    try:
        run(client, plans.wake(key))
    except RedbatchError as exc:
        log.warning(
            "could not wake the reply listener: %s", exc, extra={"event": "listener_wake_failed"}
        )


class ThreadListener:
    """``Listening`` run by daemon threads, on connections of their own."""

    def __init__(self, client: Client, listening: Listening) -> None:
        self.state = listening
        self._client = client
        # The blocking pops hold their own connections, never the client's pool's.
        self._listen_client = dedicated(
            client,
            socket_timeout=LISTEN_SOCKET_TIMEOUT_S,
            retries=LISTEN_RETRIES,
            client_name=listening.core.client_name("listener"),
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, queue: str) -> str | None:
        """Listen to the replies of physical queue ``queue``; the key to wake, if any."""
        added = self.state.add(queue)
        if added.start:
            name = f"redbatch-replies-{self.state.core.producer_id[:9]}"
            thread = threading.Thread(
                target=self._listen, args=(added.only,), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return added.wake

    def stop(self) -> None:
        """End every listener thread and close their connections."""
        wake = self.state.close()
        self._stopping.set()
        for key in wake:
            _wake_quietly(self._client, key)
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

    def _listen(self, only: str | None) -> None:
        steps = Steps(self.state.listen(only, LISTEN_TIMEOUT_S))
        for step in steps:
            if isinstance(step, Pause):
                self._pause(step)
            else:
                steps.settle(lambda: run(self._listen_client, step))  # noqa: B023

    def _pause(self, pause: Pause) -> None:
        if pause is not _FOR_KEYS:
            self._stopping.wait(pause.seconds)
            return
        with self.state.cond:
            while not self.state.reply_keys and not self.state.closed:
                self.state.cond.wait()


class TaskListener:
    """``Listening`` run by asyncio tasks: on one node on a connection of its own; on a
    cluster each task holds a connection of the cluster client's pool for its slot's node
    while it blocks, with blocks shorter than that client's read timeout."""

    def __init__(self, client: AsyncClient, listening: Listening) -> None:
        self.state = listening
        self._client = client
        self._blocking = dedicated_async(
            client,
            block_s=LISTEN_TIMEOUT_S,
            socket_timeout=LISTEN_SOCKET_TIMEOUT_S,
            retries=LISTEN_RETRIES,
            client_name=listening.core.client_name("listener"),
        )
        self._keys_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, queue: str) -> str | None:
        added = self.state.add(queue)
        self._keys_changed.set()
        if added.start:
            task = asyncio.get_running_loop().create_task(self._listen(added.only))
            self._tasks.append(task)
        return added.wake

    async def stop(self) -> None:
        """End every listener task and close their connection."""
        wake = self.state.close()
        for task in self._tasks:
            task.cancel()
        # On Python 3.11 the cancellation can be lost (asyncio.wait_for inside redis-py
        # swallows it when it lands as its inner await ends); a listener then blocks in its
        # pop for up to LISTEN_TIMEOUT_S. A marker on its key ends that pop.
        for key in wake:
            with contextlib.suppress(RedbatchError):
                await run_async(self._client, plans.wake(key))
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._blocking.aclose()

    async def _listen(self, only: str | None) -> None:
        steps = Steps(self.state.listen(only, self._blocking.block_s))
        for step in steps:
            if isinstance(step, Pause):
                await self._pause(step)
            else:
                await steps.settle_async(run_async(self._blocking.client, step))

    async def _pause(self, pause: Pause) -> None:
        if pause is not _FOR_KEYS:
            await asyncio.sleep(pause.seconds)
            return
        self._keys_changed.clear()
        if not self.state.reply_keys and not self.state.closed:
            await self._keys_changed.wait()
