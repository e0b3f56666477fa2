"""The worker process's main loop: read a batch, run it, record it; drain on stop.

I/O and compute overlap. The handler runs on one thread of its own (always the same one, as
CUDA contexts like); this loop does all Redis work meanwhile. While batch N runs, the loop
reads batch N+1 (at most one batch ahead), decodes it and hands it to the handler thread,
which marks it started and runs it the moment N ends (``worker.starting``); only then are N's
results written. With a handler that takes t per batch, throughput approaches
max_batch_size / t.

States: starting -> serving -> draining -> stopped. ``stop()`` may be called from a signal
handler or another thread: the loop notices it within ``block_ms`` (or when the running batch
ends), writes the running batch's results, hands every entry it read but did not start back
to the stream at once, removes its heartbeat and its consumer, and returns. Nothing is
stranded in memory. A batch that runs past ``batch_timeout`` (or past ``drain_timeout`` once
stopping) ends the process from the watchdog thread; the scheduler then re-queues what it
held.
"""

from __future__ import annotations

import enum
import logging
import threading
import time

import redis

from redbatch import liveness_files, tracing
from redbatch.batching import BatchPolicy
from redbatch.batching.adaptive import AdaptiveWindow
from redbatch.clock import now_ms
from redbatch.config import WorkerConfig
from redbatch.errors import ConfigError
from redbatch.logconfig import settings_line
from redbatch.protocol.keys import KeySpace, logical_name
from redbatch.transport.capabilities import detect
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import Client, check_reachable, connection_name, redacted
from redbatch.worker.batch import Batch, Turn, attempt_of, prepare
from redbatch.worker.calling import Handler
from redbatch.worker.executor import Ran
from redbatch.worker.handler_thread import HandlerThread
from redbatch.worker.heartbeat import Heartbeat, Progress
from redbatch.worker.loader import load_executors
from redbatch.worker.marks import Marks
from redbatch.worker.pending import PendingAudit, held_keys
from redbatch.worker.probes import Bounds, WorkerHealth
from redbatch.worker.reader import RawEntry, Reader
from redbatch.worker.recorder import Recorder, passing_refusal
from redbatch.worker.shards import ShardWatch
from redbatch.worker.starting import Starter
from redbatch.worker.telemetry import Telemetry
from redbatch.worker.tuning import tune
from redbatch.worker.writer import Writer

log = logging.getLogger(__name__)

# Commands retried by redis-py (with backoff, capped at 2 s) before the loop sees the error.
_WORKER_RETRIES = 10
_SOCKET_TIMEOUT_MARGIN_S = 10.0


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class Worker:
    """Serves ``config.queues`` with ``handler`` (or each queue's from ``config.handler``)."""

    def __init__(
        self,
        config: WorkerConfig,
        handler: Handler | None = None,
        client: Client | None = None,
        stop: threading.Event | None = None,
        *,
        overlap: bool = True,
    ) -> None:
        self.config = config
        # False runs batches strictly one after another (read, run, write): for benchmarks
        # that show what the overlap gains.
        self._overlap = overlap
        self.state = State.STARTING
        self._owns_client = client is None
        # The read timeout must outlast the blocking read, or an idle read ends in an error.
        self._client_name = connection_name("worker", config.name)
        self._client = client or connect_any(
            config.redis_url,
            cluster=config.cluster,
            retries=_WORKER_RETRIES,
            socket_timeout=config.block_ms / 1000 + _SOCKET_TIMEOUT_MARGIN_S,
            client_name=self._client_name,  # its dedicated connections copy it
        )
        # Shared with whoever may ask us to stop before run() (a signal during start-up).
        self._stop = stop or threading.Event()
        self._keyspace = KeySpace(config.namespace)
        policy = BatchPolicy(
            max_batch_size=config.max_batch_size,
            max_batch_cost=config.max_batch_cost,
            max_wait_ms=config.max_wait_ms,
            preferred_batch_sizes=config.preferred_batch_sizes,
            priority_aging_ms=config.priority_aging_ms,
        )
        # With a latency target, the window and batch size are tuned after every batch.
        self._tuner = (
            AdaptiveWindow(policy, config.target_latency_ms) if config.target_latency_ms else None
        )
        self._reader = Reader(
            self._client,
            self._keyspace,
            config.queues,
            config.name,
            policy=policy,
            block_ms=config.block_ms,
            gated=self._tuner is None,
        )
        self._shards = ShardWatch(self._keyspace, config.queues)
        self.progress = Progress()
        # One thread runs every handler call, so the loop can do Redis work meanwhile.
        self._handler = HandlerThread(
            self._client,
            self._keyspace,
            self.progress,
            result_ttl_s=config.result_ttl_s,
            stopping=self._stop,
        )
        self._executors = load_executors(config, handler, self._handler.loop)
        self._writer = Writer(
            self._client,
            self._keyspace,
            config.name,
            result_ttl_s=config.result_ttl_s,
            dead_maxlen=config.dead_maxlen,
            max_attempts=config.max_attempts,
            retry_delay_s=config.retry_delay_s,
        )
        self._starter = Starter(
            Marks(self._client, self._keyspace, config.name), self._handler, self._executors
        )
        self._recorder = Recorder(self._writer, self._counted)
        self._audit = PendingAudit(self._client, self._keyspace, config.name, self._writer)
        # Entries taken from the reader but never started (a stop came first): handed back.
        self._unstarted: list[RawEntry] = []
        self.telemetry = Telemetry(
            config.queues, self.progress,
            max_attempts=config.max_attempts, metrics_port=config.metrics_port,
            health=WorkerHealth(self.progress, Bounds.of(config)),
            worker=config.name, tracer=tracing.batch_tracer(),
        )  # fmt: skip
        self._heartbeat = Heartbeat(
            self._client,
            [self._keyspace.queue(q) for q in config.queues],
            config.name,
            self.progress,
            ttl_s=config.heartbeat_ttl_s,
            batch_timeout_s=config.batch_timeout_s,
            drain_timeout_s=config.drain_timeout_s,
            stop=self._stop,
            stats=self.telemetry.stats,
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
        check_reachable(
            self.config.redis_url,
            None if self._owns_client else self._client,
            client_name=self._client_name,
        )
        self.telemetry.serve()  # before a warm-up that may take minutes: a taken port fails now
        self._handler.warm_up(self._executors.values())
        self._serve_shards()
        self._reader.ensure_groups()
        self._set_state(State.SERVING)
        self._heartbeat.start()
        self._announce()
        c = self.config
        log.info(
            "worker %s serving %s on %s, %s (%s)", c.name, " ".join(self._reader.queues),
            redacted(c.redis_url), detect(self._client).describe(),
            settings_line(c, skip=("name", "queues", "redis_url")),
            extra={"event": "worker_serving", "queues": list(self._reader.queues)},
        )  # fmt: skip
        running: Batch | None = None
        try:
            while not self._stop.is_set():
                self.progress.turned = time.monotonic()  # for the liveness probe
                if self._shards.due():
                    self._serve_shards(quiet=True)
                running = self._turn(running)
            self._recorder.last(running)
        finally:
            self._handler.close()
        self._drain()
        self.telemetry.close()

    def _serve_shards(self, *, quiet: bool = False) -> None:
        """Serve every shard of the configured queues: at start, and when re-read shows new
        ones (``quiet``: a Redis error then waits for the next read, the turn reports it)."""
        try:
            added = self._reader.add_queues(self._shards.read(self._client))
            if added:
                self._reader.ensure_groups(added)
                self._heartbeat.add_queues([self._keyspace.queue(q) for q in added])
                if self.state is State.SERVING:
                    self._announce()
        except redis.RedisError:
            if not quiet:
                raise
            log.debug(
                "could not re-read the queues' shard counts",
                exc_info=True,
                extra={"event": "shards_read_failed"},
            )
        except ConfigError as exc:
            if not quiet:
                raise
            # a hand-edited count
            log.warning(
                "%s; serving the shards known before", exc, extra={"event": "shards_invalid"}
            )

    def _drain(self) -> None:
        self._set_state(State.DRAINING)
        held = self._unstarted + self._reader.release()
        self._unstarted = []
        try:
            handed = self._writer.hand_back(held) if held else 0
            log.info(
                "worker %s draining: handed %d unstarted entries back",
                self.config.name,
                handed,
                extra={"event": "worker_draining", "handed_back": handed},
            )
        except redis.RedisError as exc:
            log.warning(
                "could not hand back %d entries (%s); the scheduler will",
                len(held),
                exc,
                extra={"event": "hand_back_failed"},
            )
        self._heartbeat.stop()
        liveness_files.remove(liveness_files.WORKER, self.config.name)
        try:
            for queue in self._reader.queues:
                self._writer.leave_group(queue)
        except redis.RedisError as exc:
            log.warning(
                "could not leave the consumer group (%s); the scheduler will",
                exc,
                extra={"event": "leave_group_failed"},
            )
        self._set_state(State.STOPPED)
        log.info(
            "worker %s stopped after %d batches, %d items",
            self.config.name, self.progress.batches, self.progress.items,
            extra={"event": "worker_stopped"},
        )  # fmt: skip

    def _announce(self) -> None:
        """Name this worker and its heartbeats in the host's runtime directory (--check)."""
        liveness_files.write(
            liveness_files.WORKER, self.config.name, self.config.namespace, self._reader.queues
        )

    def _set_state(self, state: State) -> None:
        self.state = state
        self.progress.state = state.value

    def _turn(self, running: Batch | None) -> Batch | None:
        """One turn of the loop; returns the batch running after it, if any.

        A Redis error is logged (once per outage) and the loop carries on: redis-py already
        retried with backoff. Results a lost connection kept from being written are written
        first thing on a later turn; entries read and decoded but not started are held again;
        what a refusal (a script error) left unwritten stays pending for the scheduler."""
        turn = Turn()
        try:
            self._recorder.rewrite()
            if self._audit.due():
                held = self._reader.held(), [running, *self._recorder.holding()], self._unstarted
                self._audit.run(self._reader.queues, held_keys(*held))
            launched = self._advance(running, turn)
            self._recorder.reachable()
            return launched
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._recorder.lost(exc, running)
            self._audit.soon()  # a read's reply may have been lost with the connection
        except redis.ResponseError as exc:
            if passing_refusal(exc):  # OOM, READONLY, ...: kept and written again
                self._recorder.refused(exc, running)
            else:  # a script error: the batch stays pending; the pending audit re-queues it
                log.exception(
                    "Redis refused a command; the batch stays pending",
                    extra={"event": "redis_refused_command"},
                )
        if turn.following is not None:
            self._reader.hold_again(turn.following.entries)
        if turn.launched is not None:
            return turn.launched
        if running is not None and not running.finished(0):
            return running  # still the handler's; its results are written on a later turn
        return None

    def _advance(self, running: Batch | None, turn: Turn) -> Batch | None:
        """Start the next batch (reading ahead while ``running`` runs), then record
        ``running``; ``turn`` says how far it got if Redis fails on the way."""
        if running is None:
            self._recorder.settle()  # before a read that may block: nothing unconfirmed
            batch = self._reader.next_batch()
            turn.following = self._prepare(batch) if batch else None
            turn.launched, turn.following = self._starter.launch(turn.following), None
            return turn.launched
        if not running.alone and self._reads_ahead(running):
            self._reader.read_ahead(lambda t: running.finished(t) or self._stop.is_set())
            if not running.finished(0) and not self._stop.is_set():
                # A full batch is held while N still runs: decode it now.
                turn.following = self._prepare(self._reader.due_batch(read=False))
                self._starter.follow(turn.following)
        running.finished(None)
        if self._starter.relayed(turn.following):  # the handler thread started it
            turn.launched, turn.following = turn.following, None
        else:
            if turn.following is None and not running.alone and not self._stop.is_set():
                # Only what is already held: a read here would delay N's results by a round
                # trip, and at low load (nothing held) the results matter more.
                turn.following = self._prepare(self._reader.due_batch(read=False))
            if turn.following is not None and self._stop.is_set():
                # Stopping while N ran: N+1 was decoded but never started; it goes back.
                self._unstarted += turn.following.entries
                turn.following = None
            turn.launched, turn.following = self._starter.launch(turn.following), None
        if turn.launched is not None and not turn.launched.alone and not self._stop.is_set():
            # Read ahead before N's results go out: Redis runs their script for a while, and
            # a read sent after it would wait for it instead of feeding the next decode.
            self._reader.top_up()
        self._recorder.record(running)
        return turn.launched

    def _reads_ahead(self, running: Batch) -> bool:
        """Read ahead only behind a batch at least a quarter full: at low load a read while
        a lone request runs only delays its result by a round trip, and what arrives
        meanwhile is read as soon as the result is out."""
        return 4 * len(running.entries) >= self._reader.policy.max_batch_size

    def _prepare(self, entries: list[RawEntry]) -> Batch | None:
        """Parse and decode a batch (isolating a redelivered suspect first)."""
        if not entries:
            return None
        entries, alone = self._isolate(entries)
        executor = self._executors[logical_name(entries[0].queue)]
        return prepare(entries, executor, alone=alone or not self._overlap)

    def _isolate(self, batch: list[RawEntry]) -> tuple[list[RawEntry], bool]:
        """A redelivered entry (attempt > 1) may be what crashed a worker: it runs alone, and
        everything else this worker holds goes back to the stream first, so another crash
        cannot take innocent neighbours (and their attempts) down with it."""
        suspect = next((e for e in batch if attempt_of(e) > 1), None)
        if suspect is None:
            return batch, False
        others = [e for e in batch if e is not suspect] + self._reader.release()
        if others:
            self._writer.hand_back(others)
        return [suspect], True

    def _counted(self, batch: Batch, ran: list[Ran]) -> None:
        """A batch's results are on their way to Redis: count it, tune the window."""
        if self._tuner is not None and ran:
            tune(self._tuner, self._reader, batch, ran)
        self.telemetry.batch_done(
            batch.queue, ran, len(batch.malformed), batch.service_s, batch.entries
        )
        self.progress.batches += 1
        self.progress.items += len(batch.entries)
        self.progress.busy_us += round(batch.service_s * 1_000_000)
        self.progress.last_batch_ms = now_ms()
