"""The worker's heartbeat and watchdog, on a thread of their own.

The heartbeat (``rb:{Q}:worker:<name>``, a hash with a TTL, per queue served) renews only
while the worker makes progress. A batch that runs past ``batch_timeout`` stops the renewal
and ends the process: a hung GPU kernel cannot be interrupted from Python, so the process
exits non-zero for its orchestrator to restart it, and the scheduler re-queues what it held
once the heartbeat is gone. The same thread enforces ``drain_timeout`` after a stop request,
and flushes the worker's statistics (``stats_buffer``) into Redis in the heartbeat's pipeline.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from redbatch import clock
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.records import (
    BEAT_BATCH_TIMEOUT,
    BEAT_BATCHES,
    BEAT_BUSY,
    BEAT_BUSY_US,
    BEAT_HOST,
    BEAT_ITEMS,
    BEAT_LAST_BATCH,
    BEAT_PID,
    BEAT_QUEUES,
    BEAT_STARTED,
    BEAT_STATE,
)
from redbatch.transport.connection import Client
from redbatch.transport.topology import pipelines_apart, topology_of
from redbatch.worker import stats_buffer
from redbatch.worker.recorder import passing_refusal
from redbatch.worker.stats_buffer import StatsBuffer

log = logging.getLogger(__name__)

EXIT_BATCH_TIMEOUT = 4
EXIT_DRAIN_TIMEOUT = 5
# Statistics are flushed (and the heartbeat renewed) at least this often: readers sum
# 10-second slots, so counts should not sit in a worker's memory much longer than a second.
FLUSH_INTERVAL_S = 1.0
# How often the served queues are marked in rb:watch (s); a mark lasts 30 s (scheduler.watch).
WATCH_MARK_S = 5.0


@dataclass
class Progress:
    """What the main loop tells the watchdog (plain attributes: one writer, one reader)."""

    batches: int = 0
    items: int = 0
    busy_us: int = 0  # handler time of the counted batches: readers diff it for a busy ratio
    last_batch_ms: int = 0
    batch_started: float | None = None  # monotonic; None while no batch runs
    batch_items: int = 0  # items of the running (or last) batch; read with batch_started
    batch_queue: str = ""  # the (logical) queue of the running (or last) batch
    stop_requested: float | None = None  # monotonic
    state: str = "starting"
    renewed: float | None = None  # monotonic; the last heartbeat Redis accepted
    turned: float | None = None  # monotonic; the main loop's last turn
    started_ms: int = field(default_factory=clock.now_ms)


def overdue(progress: Progress, now: float, batch_timeout_s: float, drain_timeout_s: float) -> str:
    """Why the process must end now, or "" (pure: the decision is tested without threads)."""
    if progress.batch_started is not None and now - progress.batch_started > batch_timeout_s:
        return f"a batch has run for over batch_timeout ({batch_timeout_s:g} s)"
    stopping = progress.stop_requested
    running = progress.batch_started is not None
    if stopping is not None and running and now - stopping > drain_timeout_s:
        return f"the running batch did not finish within drain_timeout ({drain_timeout_s:g} s)"
    return ""


class Heartbeat:
    def __init__(
        self,
        client: Client,
        keys: list[QueueKeys],
        name: str,
        progress: Progress,
        *,
        ttl_s: int,
        batch_timeout_s: int,
        drain_timeout_s: int,
        stop: threading.Event,
        exit_process: Callable[[int], None] = os._exit,
        stats: StatsBuffer | None = None,
    ) -> None:
        self._stop_requested = stop
        self._client = client
        self._topology = topology_of(client)
        self._keys = keys
        self._name = name
        self._progress = progress
        self._ttl_s = ttl_s
        self._batch_timeout_s = batch_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._exit = exit_process
        self._stats = stats
        self._stats_keys = {k.name: k for k in keys}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redbatch-heartbeat", daemon=True)
        self._warned = False
        self._watch_marked = -math.inf
        self._watch_warned = False

    def add_queues(self, keys: list[QueueKeys]) -> None:
        """Beat for these queues (new shards) too. New objects, not updates in place: the
        heartbeat thread may be iterating over the old ones."""
        self._keys = [*self._keys, *keys]
        self._stats_keys = {**self._stats_keys, **{k.name: k for k in keys}}

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing, flush the last statistics and delete the heartbeat (a clean exit:
        nothing to reap)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        taken = self._stats.take() if self._stats is not None else {}
        pipe = self._client.pipeline(transaction=False)
        stats_buffer.write(pipe, self._stats_keys, taken)
        for keys in self._keys:  # one DEL each: a cluster pipeline takes one key per DEL
            pipe.delete(keys.worker(self._name))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "could not delete the heartbeat: %s",
                exc,
                extra={"event": "heartbeat_delete_failed"},
            )

    def beat(self) -> None:
        """Renew the heartbeat and add the statistics gathered since the last beat, in one
        pipeline; if it fails the statistics are kept for the next beat."""
        clock.SERVER.refresh(self._client)  # the worker's one clock: Redis's
        p = self._progress
        fields: dict[str, str | int] = {
            BEAT_PID: os.getpid(),
            BEAT_HOST: socket.gethostname(),
            BEAT_QUEUES: " ".join(k.name for k in self._keys),
            BEAT_STARTED: p.started_ms,
            BEAT_BATCHES: p.batches,
            BEAT_ITEMS: p.items,
            BEAT_BUSY_US: p.busy_us,
            BEAT_LAST_BATCH: p.last_batch_ms,
            BEAT_BATCH_TIMEOUT: self._batch_timeout_s,
            BEAT_STATE: p.state,
            BEAT_BUSY: "1" if p.batch_started is not None else "0",
        }
        pipe = self._client.pipeline(transaction=False)
        lost = self._put_beats(pipe, fields)
        taken = self._stats.take() if self._stats is not None else {}
        stats_buffer.write(pipe, self._stats_keys, taken)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            # Not written (or not known to be), or refused for a reason that passes (OOM
            # refuses every HINCRBY alike): try again next beat. Any other error came back
            # from a server that ran the whole pipeline, so the counts are in.
            refused = isinstance(exc, redis.ResponseError) and not passing_refusal(exc)
            if self._stats is not None and not refused:
                self._stats.put_back(taken)
            raise
        self._mark_watched()
        if lost is not None:
            raise lost
        self._progress.renewed = time.monotonic()

    def _mark_watched(self) -> None:
        """Mark the served queues in ``rb:watch`` (at most every WATCH_MARK_S): schedulers
        visit only marked queues and those they find holding work. Best effort: a scheduler
        also sweeps every queue, only more slowly."""
        now = time.monotonic()
        if not self._keys or now - self._watch_marked < WATCH_MARK_S:
            return
        watch = KeySpace(self._keys[0].namespace).watch
        try:
            self._client.zadd(watch, {k.name: clock.now_ms() for k in self._keys})
        except redis.RedisError as exc:
            if not self._watch_warned:  # an ACL from before rb:watch: say it once
                log.warning(
                    "could not mark the served queues in %s: %s",
                    watch,
                    exc,
                    extra={"event": "watch_mark_failed"},
                )
                self._watch_warned = True
            return
        self._watch_marked = now

    def _put_beats(self, pipe: Any, fields: dict[str, str | int]) -> redis.RedisError | None:
        """Every queue's heartbeat: into ``pipe`` on one node; where nodes fail apart (a
        cluster) each queue's now, in a pipeline of its own, so a primary that is down (for
        its failover, up to cluster-node-timeout and more) lapses only the heartbeats of its
        own slots; one pipeline for all would renew none, and the scheduler would re-queue
        this worker's running batches everywhere. Returns the last failure, if any."""
        put = partial(self._put_beat, fields)
        if self._topology.one_node:
            for keys in self._keys:
                put(pipe, keys)
            return None
        _, failures = pipelines_apart(self._client, [[keys] for keys in self._keys], put)
        return failures[-1] if failures else None

    def _put_beat(self, fields: dict[str, str | int], pipe: Any, keys: QueueKeys) -> None:
        pipe.hset(keys.worker(self._name), mapping=fields)
        pipe.expire(keys.worker(self._name), self._ttl_s)

    def _run(self) -> None:
        # Renew several times per TTL so one slow round trip never lets it lapse.
        interval = min(self._ttl_s / 5, FLUSH_INTERVAL_S)
        while not self._stopped.wait(interval):
            if self._stop_requested.is_set() and self._progress.stop_requested is None:
                # The main loop may be deep in a batch: say "draining" from now on.
                self._progress.stop_requested = time.monotonic()
                self._progress.state = "draining"
                if self._progress.batch_started is not None:
                    # Otherwise the drain is over in moments and the loop logs it; a long
                    # batch would leave the operator guessing why the process lingers.
                    log.info(
                        "worker %s: stop requested; finishing the running batch "
                        "(drain_timeout %d s)", self._name, self._drain_timeout_s,
                        extra={"event": "worker_stop_requested"},
                    )  # fmt: skip
            why = overdue(
                self._progress, time.monotonic(), self._batch_timeout_s, self._drain_timeout_s
            )
            if why:
                code = EXIT_DRAIN_TIMEOUT if "drain" in why else EXIT_BATCH_TIMEOUT
                log.error(
                    "worker %s exits (code %d): %s", self._name, code, why,
                    extra={"event": "worker_overdue_exit", "exit_code": code},
                )  # fmt: skip
                logging.shutdown()
                self._exit(code)
                return
            self._renew()

    def _renew(self) -> None:
        try:
            self.beat()
            if self._warned:
                log.info("heartbeat renewed again", extra={"event": "heartbeat_renewed"})
                self._warned = False
        except redis.RedisError as exc:
            if not self._warned:
                log.warning(
                    "cannot renew the heartbeat: %s", exc, extra={"event": "heartbeat_failed"}
                )
                self._warned = True
