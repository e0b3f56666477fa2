"""The worker process's main loop: read a batch, run it, record it; drain on stop.

States: starting -> serving -> draining -> stopped. ``stop()`` may be called from a signal
handler or another thread: the loop notices it within ``block_ms``, finishes the batch in hand
and every entry already delivered to it, then returns. Nothing is stranded in memory: what was
read is either answered or still pending in Redis for the scheduler to re-queue.
"""

from __future__ import annotations

import enum
import logging
import threading

import redis

from redbatch.config import WorkerConfig
from redbatch.connection import connect, ping, redacted
from redbatch.errors import MalformedEntry
from redbatch.protocol import codec
from redbatch.protocol.fields import Request, parse_entry
from redbatch.protocol.keys import KeySpace
from redbatch.worker.executor import Executor, Handler
from redbatch.worker.loader import load_handler
from redbatch.worker.reader import RawEntry, Reader
from redbatch.worker.writer import Malformed, Writer

log = logging.getLogger(__name__)

# Commands retried by redis-py (with backoff, capped at 2 s) before the loop sees the error.
_WORKER_RETRIES = 10
_SOCKET_TIMEOUT_MARGIN_S = 10.0
# The start-up check must fail fast (exit 3 in about a second), not ride out an outage:
# with _WORKER_RETRIES it took 8-13 s to report an unreachable Redis.
_STARTUP_RETRIES = 1


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class Worker:
    """Serves ``config.queues`` with ``handler`` (loaded from ``config.handler`` if not given)."""

    def __init__(
        self,
        config: WorkerConfig,
        handler: Handler | None = None,
        client: redis.Redis | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.state = State.STARTING
        self.batches = 0
        self.items = 0
        self._handler = handler or load_handler(config.handler, config.handler_options)
        self._owns_client = client is None
        # The read timeout must outlast the blocking read, or an idle read ends in an error.
        self._client = client or connect(
            config.redis_url,
            retries=_WORKER_RETRIES,
            socket_timeout=config.block_ms / 1000 + _SOCKET_TIMEOUT_MARGIN_S,
        )
        # Shared with whoever may ask us to stop before run() (a signal during start-up).
        self._stop = stop or threading.Event()
        keyspace = KeySpace(config.namespace)
        self._reader = Reader(
            self._client,
            keyspace,
            config.queues,
            config.name,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            block_ms=config.block_ms,
        )
        limits = codec.Limits(config.max_payload_bytes)
        self._executor = Executor(self._handler, limits)
        self._writer = Writer(
            self._client,
            keyspace,
            config.name,
            result_ttl_s=config.result_ttl_s,
            dead_maxlen=config.dead_maxlen,
        )

    def stop(self) -> None:
        """Ask the loop to drain and return; safe from signal handlers and other threads."""
        self._stop.set()

    def run(self) -> None:
        self._check_reachable()
        self._reader.ensure_groups()
        self.state = State.SERVING
        log.info(
            "worker %s serving %s on %s (max_batch_size=%d max_wait_ms=%d handler=%s)",
            self.config.name,
            " ".join(self.config.queues),
            redacted(self.config.redis_url),
            self.config.max_batch_size,
            self.config.max_wait_ms,
            self.config.handler,
        )
        while not self._stop.is_set():
            self._step(block=True)
        self.state = State.DRAINING
        log.info("worker %s draining %d held entries", self.config.name, self._reader.holding)
        while self._reader.holding:
            self._step(block=False)
        self.state = State.STOPPED
        log.info(
            "worker %s stopped after %d batches, %d items",
            self.config.name,
            self.batches,
            self.items,
        )

    def _check_reachable(self) -> None:
        """Raise ConnectionFailed at once if Redis cannot be used (no long retry loop)."""
        if not self._owns_client:
            ping(self._client, self.config.redis_url)
            return
        probe = connect(self.config.redis_url, retries=_STARTUP_RETRIES)
        try:
            ping(probe, self.config.redis_url)
        finally:
            probe.close()

    def _step(self, *, block: bool) -> None:
        try:
            batch = self._reader.next_batch(block=block)
            if batch:
                self._process(batch)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py already retried with backoff; what we read stays pending in Redis.
            log.warning("Redis unavailable (%s); carrying on", exc)
        except redis.ResponseError:
            # A server-side refusal (OOM, a script error): the batch stays pending in Redis
            # for the scheduler to re-queue; the worker keeps serving.
            log.exception("Redis refused a command; the batch stays pending")

    def _process(self, batch: list[RawEntry]) -> None:
        queue = batch[0].queue
        requests: list[Request] = []
        malformed: list[Malformed] = []
        for entry in batch:
            try:
                requests.append(parse_entry(queue, entry.entry_id, entry.fields))
            except MalformedEntry as exc:
                malformed.append(Malformed(entry, str(exc)))
        for bad in malformed:
            log.warning(
                "dead-lettering malformed entry %s on %s: %s", bad.entry.entry_id, queue, bad.reason
            )
        ran = self._executor.run(requests) if requests else []
        raw = {entry.entry_id: entry for entry in batch}
        existed = self._writer.finish(queue, ran, malformed, raw)
        if existed:
            log.info("%d results on %s already existed; kept the first outcome", existed, queue)
        self.batches += 1
        self.items += len(batch)
