"""Scheduler processes for integration tests: real ``redbatch scheduler`` subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

from helpers import subprocess_env
from helpers.workers import WorkerProcess, wait_until

# Logged once Redis answered, just before the first pass (the SIGTERM handler is on).
RUNNING_MARKER = "scheduler on "


def start_scheduler(
    redis_url: str, namespace: str, *, log_dir: str, extra: tuple[str, ...] = ()
) -> WorkerProcess:
    """Start ``redbatch scheduler``; stop it with ``.stop()`` (SIGTERM), which must give 0."""
    name = f"s-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable, "-m", "redbatch", "scheduler", "--redis-url", redis_url,
        "--namespace", namespace, "--interval", "0.2", *extra,
    ]  # fmt: skip
    log_path = f"{log_dir}/{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    return WorkerProcess(name, proc, log_path, args, ready=re.compile(RUNNING_MARKER))


def wait_running(scheduler: WorkerProcess, timeout: float = 30.0) -> WorkerProcess:
    """Wait for the start-up line (logged once Redis answered, just before the first pass)."""
    marker = RUNNING_MARKER
    wait_until(
        lambda: marker in scheduler.log() or scheduler.proc.poll() is not None, timeout, marker
    )
    assert scheduler.proc.poll() is None, scheduler.log()
    return scheduler
