"""The worker process's main loop: read a batch, run it, record it; drain on stop.

States: starting -> serving -> draining -> stopped. ``stop()`` may be called from a signal
handler or another thread: the loop notices it within ``block_ms`` (or when the running batch
ends), hands every entry it read but did not start back to the stream at once, removes its
heartbeat and its consumer, and returns. Nothing is stranded in memory. A batch that runs past
``batch_timeout`` (or past ``drain_timeout`` once stopping) ends the process from the watchdog
thread; the scheduler then re-queues what it held.
"""

from __future__ import annotations

import enum
import logging
import threading
import time

import redis

from redbatch.batching import BatchPolicy
from redbatch.config import WorkerConfig
from redbatch.connection import check_reachable, connect, redacted
from redbatch.errors import MalformedEntry
from redbatch.protocol import codec
from redbatch.protocol.fields import Request, parse_entry
from redbatch.protocol.keys import GROUP, KeySpace
from redbatch.worker.executor import Executor, Handler, now_ms
from redbatch.worker.heartbeat import Heartbeat, Progress
from redbatch.worker.loader import load_exception_types, load_handler
from redbatch.worker.reader import RawEntry, Reader
from redbatch.worker.writer import Malformed, Writer

log = logging.getLogger(__name__)

# Commands retried by redis-py (with backoff, capped at 2 s) before the loop sees the error.
_WORKER_RETRIES = 10
_SOCKET_TIMEOUT_MARGIN_S = 10.0


# The delivery count a worker gives the entries of a batch it starts (requeue.lua reads it).
STARTED_DELIVERIES = 2


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


def attempt_of(entry: RawEntry) -> int:
    raw = entry.fields.get(b"attempt", b"1")
    return int(raw) if raw.isdigit() and len(raw) < 10 else 1


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
        self._keyspace = KeySpace(config.namespace)
        self._reader = Reader(
            self._client,
            self._keyspace,
            config.queues,
            config.name,
            policy=BatchPolicy(
                max_batch_size=config.max_batch_size,
                max_batch_cost=config.max_batch_cost,
                max_wait_ms=config.max_wait_ms,
                preferred_batch_sizes=config.preferred_batch_sizes,
            ),
            block_ms=config.block_ms,
        )
        self._executor = Executor(
            self._handler,
            codec.Limits(config.max_payload_bytes),
            retry_on=load_exception_types(config.retry_on),
        )
        self._writer = Writer(
            self._client,
            self._keyspace,
            config.name,
            result_ttl_s=config.result_ttl_s,
            dead_maxlen=config.dead_maxlen,
            max_attempts=config.max_attempts,
            retry_delay_s=config.retry_delay_s,
        )
        self.progress = Progress()
        self._heartbeat = Heartbeat(
            self._client,
            [self._keyspace.queue(q) for q in config.queues],
            config.name,
            self.progress,
            ttl_s=config.heartbeat_ttl_s,
            batch_timeout_s=config.batch_timeout_s,
            drain_timeout_s=config.drain_timeout_s,
            stop=self._stop,
        )

    @property
    def batches(self) -> int:
        return self.progress.batches

    @property
    def items(self) -> int:
        return self.progress.items

    def stop(self) -> None:
        """Ask the loop to drain and return; safe from signal handlers and other threads."""
        self._stop.set()

    def run(self) -> None:
        check_reachable(self.config.redis_url, None if self._owns_client else self._client)
        self._reader.ensure_groups()
        self._set_state(State.SERVING)
        self._heartbeat.start()
        c = self.config
        log.info(
            "worker %s serving %s on %s (handler=%s max_batch_size=%d max_batch_cost=%d "
            "max_wait_ms=%d batch_timeout=%ds max_attempts=%d)",
            c.name, " ".join(c.queues), redacted(c.redis_url), c.handler, c.max_batch_size,
            c.max_batch_cost, c.max_wait_ms, c.batch_timeout_s, c.max_attempts,
        )  # fmt: skip
        while not self._stop.is_set():
            self._step()
        self._drain()

    def _drain(self) -> None:
        self._set_state(State.DRAINING)
        held = self._reader.release()
        try:
            handed = self._writer.hand_back(held) if held else 0
            log.info(
                "worker %s draining: handed %d unstarted entries back", self.config.name, handed
            )
        except redis.RedisError as exc:
            log.warning("could not hand back %d entries (%s); the scheduler will", len(held), exc)
        self._heartbeat.stop()
        try:
            for queue in self.config.queues:
                self._writer.leave_group(queue)
        except redis.RedisError as exc:
            log.warning("could not leave the consumer group (%s); the scheduler will", exc)
        self._set_state(State.STOPPED)
        log.info(
            "worker %s stopped after %d batches, %d items",
            self.config.name, self.progress.batches, self.progress.items,
        )  # fmt: skip

    def _set_state(self, state: State) -> None:
        self.state = state
        self.progress.state = state.value

    def _step(self) -> None:
        try:
            batch = self._reader.next_batch()
            if batch:
                self._process(self._isolate(batch))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py already retried with backoff; what we read stays pending in Redis.
            log.warning("Redis unavailable (%s); carrying on", exc)
        except redis.ResponseError:
            # A server-side refusal (OOM, a script error): the batch stays pending in Redis
            # for the scheduler to re-queue; the worker keeps serving.
            log.exception("Redis refused a command; the batch stays pending")

    def _isolate(self, batch: list[RawEntry]) -> list[RawEntry]:
        """A redelivered entry (attempt > 1) may be what crashed a worker: it runs alone, and
        everything else this worker holds goes back to the stream first, so another crash
        cannot take innocent neighbours (and their attempts) down with it."""
        suspect = next((e for e in batch if attempt_of(e) > 1), None)
        if suspect is None:
            return batch
        others = [e for e in batch if e is not suspect] + self._reader.release()
        if others:
            self._writer.hand_back(others)
        return [suspect]

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
        ran = []
        if requests:
            cancelled = self._start(queue, requests)
            self.progress.batch_started = time.monotonic()
            try:
                ran = self._executor.run(requests, cancelled)
            finally:
                self.progress.batch_started = None
        raw = {entry.entry_id: entry for entry in batch}
        existed = self._writer.finish(queue, ran, malformed, raw)
        if existed:
            log.info("%d results on %s already existed; kept the first outcome", existed, queue)
        self.progress.batches += 1
        self.progress.items += len(batch)
        self.progress.last_batch_ms = now_ms()

    def _start(self, queue: str, requests: list[Request]) -> frozenset[str]:
        """Mark the batch started and return the ids cancelled meanwhile (one round trip).

        Started = delivery count 2 in the group's pending list: the scheduler counts an
        attempt against a dead worker's entry only when it was started, so entries a worker
        merely held (read, or about to be handed back) when it was killed keep their attempt
        and no request nobody ever ran is dead-lettered for other requests' crashes."""
        keys = self._keyspace.queue(queue)
        pipe = self._client.pipeline(transaction=False)
        pipe.xclaim(
            keys.stream, GROUP, self.config.name, 0, [r.entry_id for r in requests],
            justid=True, retrycount=STARTED_DELIVERIES,
        )  # fmt: skip
        pipe.mget([keys.cancel(r.id) for r in requests])
        _claimed, flags = pipe.execute()
        return frozenset(r.id for r, flag in zip(requests, flags, strict=True) if flag)
