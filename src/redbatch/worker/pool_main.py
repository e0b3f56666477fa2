"""``redbatch worker --processes N`` / ``--gpus ...``: the pool's start, from the worker
command's validated settings and its own arguments (which the children get, less what the
pool decides per child)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from redbatch.config import WorkerConfig
from redbatch.stop_signals import on_stop_signals
from redbatch.worker import pool_http
from redbatch.worker.pool import Pool, parse_gpus, plan

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


def run_pool(
    config: WorkerConfig, argv: Sequence[str], processes: int, gpus: str, stop: threading.Event
) -> int:
    """Start the children and supervise them until ``stop``; the pool's exit code."""
    devices = plan(processes, parse_gpus(gpus) if gpus.strip() else ())
    pool = Pool(
        argv, devices, name=config.name, metrics_port=config.metrics_port,
        drain_timeout_s=config.drain_timeout_s, stop=stop,
    )  # fmt: skip
    _on_signals(pool, stop)
    if stop.is_set():  # a signal while starting: nothing to start
        return 0
    return pool_http.run(pool, config.metrics_port)


def _on_signals(pool: Pool, stop: threading.Event) -> None:
    """First SIGTERM/SIGINT: every child drains. A second: every child is killed at once
    (the scheduler re-queues what they held), and the pool exits 130."""

    def quit_now() -> NoReturn:
        sys.stderr.write("redbatch: second signal, killing the pool's workers\n")
        pool.kill()
        os._exit(EXIT_INTERRUPTED)

    on_stop_signals(stop.set, quit_now)
