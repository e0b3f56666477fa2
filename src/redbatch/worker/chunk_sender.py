"""Sends a streaming batch's steps to Redis: one push_chunks.lua call per step.

Called from the handler thread between two steps, on purpose: the call is one round trip
(a fraction of a millisecond beside a model step), its answer (the requests cancelled
meanwhile) must reach the handler before its next step, and every chunk of a request must be
in its producer's reply list before the batch's final replies, which the loop writes only
once the handler returned.
"""

from __future__ import annotations

import logging

import redis

from redbatch.connection import Client
from redbatch.protocol.chunks import StepChunk, push_chunks_args
from redbatch.protocol.keys import KeySpace
from redbatch.protocol.scripts import load_lua
from redbatch.worker.streaming import Publish

log = logging.getLogger(__name__)


class ChunkSender:
    def __init__(self, client: Client, keyspace: KeySpace, *, result_ttl_s: int) -> None:
        self._script = client.register_script(load_lua("push_chunks"))
        self._keyspace = keyspace
        self._ttl_ms = result_ttl_s * 1000

    def publisher(self, queue: str) -> Publish:
        """The ``publish`` of a batch read from physical queue ``queue``."""
        keys = self._keyspace.queue(queue)

        def publish(running: list[str], chunks: list[StepChunk]) -> set[int]:
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
            return {int(at) - 1 for at in cancelled}

        return publish
