"""The worker's heartbeat and watchdog, on a thread of their own.

The heartbeat (``rb:{Q}:worker:<name>``, a hash with a TTL, per queue served) renews only
while the worker makes progress. A batch that runs past ``batch_timeout`` stops the renewal
and ends the process: a hung GPU kernel cannot be interrupted from Python, so the process
exits non-zero for its orchestrator to restart it, and the scheduler re-queues what it held
once the heartbeat is gone. The same thread enforces ``drain_timeout`` after a stop request.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from redbatch.protocol.keys import QueueKeys

log = logging.getLogger(__name__)

EXIT_BATCH_TIMEOUT = 4
EXIT_DRAIN_TIMEOUT = 5


@dataclass
class Progress:
    """What the main loop tells the watchdog (plain attributes: one writer, one reader)."""

    batches: int = 0
    items: int = 0
    last_batch_ms: int = 0
    batch_started: float | None = None  # monotonic; None while no batch runs
    stop_requested: float | None = None  # monotonic
    state: str = "starting"
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


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
        client: redis.Redis,
        keys: list[QueueKeys],
        name: str,
        progress: Progress,
        *,
        ttl_s: int,
        batch_timeout_s: int,
        drain_timeout_s: int,
        stop: threading.Event,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self._stop_requested = stop
        self._client = client
        self._keys = keys
        self._name = name
        self._progress = progress
        self._ttl_s = ttl_s
        self._batch_timeout_s = batch_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._exit = exit_process
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redbatch-heartbeat", daemon=True)
        self._warned = False

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and delete the heartbeat (a clean exit: nothing to reap)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._client.delete(*(k.worker(self._name) for k in self._keys))
        except redis.RedisError as exc:
            log.warning("could not delete the heartbeat: %s", exc)

    def beat(self) -> None:
        p = self._progress
        fields: dict[str, str | int] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "queues": " ".join(k.name for k in self._keys),
            "started": p.started_ms,
            "batches": p.batches,
            "items": p.items,
            "last_batch": p.last_batch_ms,
            "batch_timeout": self._batch_timeout_s,
            "state": p.state,
        }
        pipe = self._client.pipeline(transaction=False)
        for keys in self._keys:
            pipe.hset(keys.worker(self._name), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.worker(self._name), self._ttl_s)
        pipe.execute()

    def _run(self) -> None:
        # Renew several times per TTL so one slow round trip never lets it lapse.
        interval = self._ttl_s / 5
        while not self._stopped.wait(interval):
            if self._stop_requested.is_set() and self._progress.stop_requested is None:
                # The main loop may be deep in a batch: say "draining" from now on.
                self._progress.stop_requested = time.monotonic()
                self._progress.state = "draining"
            why = overdue(
                self._progress, time.monotonic(), self._batch_timeout_s, self._drain_timeout_s
            )
            if why:
                code = EXIT_DRAIN_TIMEOUT if "drain" in why else EXIT_BATCH_TIMEOUT
                log.error("worker %s exits (code %d): %s", self._name, code, why)
                logging.shutdown()
                self._exit(code)
                return
            self._renew()

    def _renew(self) -> None:
        try:
            self.beat()
            if self._warned:
                log.info("heartbeat renewed again")
                self._warned = False
        except redis.RedisError as exc:
            if not self._warned:
                log.warning("cannot renew the heartbeat: %s", exc)
                self._warned = True
