"""Sends a streaming batch's steps to Redis: one push_chunks.lua call per step.

The calls go out from a thread of their own, in step order, while the handler computes its
next step: a step costs the generator only a hand-off, not a round trip. At most two steps
are in flight (a generator faster than Redis waits for the older one), and each call's
answer, the requests cancelled meanwhile, reaches the handler at the step after it arrives.
``flush`` waits for every call: the loop writes the batch's final replies only after the
handler thread returned, so every chunk is in its producer's reply list before them.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import redis

from redbatch.protocol.chunks import StepChunk, push_chunks_args
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.scripts import load_lua
from redbatch.transport.connection import Client

log = logging.getLogger(__name__)

_IN_FLIGHT = 2


class ChunkSender:
    def __init__(self, client: Client, keyspace: KeySpace, *, result_ttl_s: int) -> None:
        self._script = client.register_script(load_lua("push_chunks"))
        self._keyspace = keyspace
        self._ttl_ms = result_ttl_s * 1000
        self._pool: ThreadPoolExecutor | None = None
        self._keys: dict[str, QueueKeys] = {}

    def publisher(self, queue: str) -> StepPublisher:
        """The ``publish`` of a batch read from physical queue ``queue`` (made for every
        batch: cheap, and nothing starts until a streaming handler's first step)."""
        return StepPublisher(self, self.keys(queue))

    def submit(
        self, keys: QueueKeys, running: list[str], chunks: list[StepChunk]
    ) -> Future[set[str]]:
        if self._pool is None:  # the first streaming step of this worker
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redbatch-chunks")
        return self._pool.submit(self.send, keys, running, chunks)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def send(self, keys: QueueKeys, running: list[str], chunks: list[StepChunk]) -> set[str]:
        """One step's call; the ids of the requests found cancelled."""
        script_keys, argv = push_chunks_args(keys, running, chunks, ttl_ms=self._ttl_ms)
        try:
            cancelled = self._script(keys=script_keys, args=argv)
        except redis.RedisError as exc:
            # redis-py already retried: the step's chunks are lost to live readers, the
            # items go on and end with their final results as usual.
            log.warning(
                "could not send a streaming step's %d chunks: %s", len(chunks), exc,
                extra={"event": "stream_step_unsent"},
            )  # fmt: skip
            return set()
        return {running[int(at) - 1] for at in cancelled}

    def check_cancelled(self, keys: QueueKeys, running: list[str]) -> set[str]:
        """The ids of ``running`` whose cancel key is set (a step without chunks); none
        when Redis cannot say (the next check asks again)."""
        script_keys, argv = push_chunks_args(keys, running, [], ttl_ms=self._ttl_ms)
        try:
            cancelled = self._script(keys=script_keys, args=argv)
        except redis.RedisError as exc:
            log.debug("could not check cancels: %s", exc, extra={"event": "cancel_check_failed"})
            return set()
        return {running[int(at) - 1] for at in cancelled}

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = self._keyspace.queue(queue)
        return keys


class StepPublisher:
    """One batch's steps, sent in order from the sender's thread."""

    def __init__(self, sender: ChunkSender, keys: QueueKeys) -> None:
        self._sender = sender
        self._keys = keys
        self._sending: deque[Future[set[str]]] = deque()

    def __call__(self, running: list[str], chunks: list[StepChunk]) -> set[str]:
        gone: set[str] = set()
        while self._sending and (self._sending[0].done() or len(self._sending) >= _IN_FLIGHT):
            gone |= self._sending.popleft().result()
        self._sending.append(self._sender.submit(self._keys, running, chunks))
        return gone

    def flush(self) -> set[str]:
        """Wait until every step sent has been written; the cancels not yet told."""
        gone: set[str] = set()
        while self._sending:
            gone |= self._sending.popleft().result()
        return gone
