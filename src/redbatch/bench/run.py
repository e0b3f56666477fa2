"""One bench run: the target Redis (or a private one), the workers bench starts, the load
(``drive``), the batch sizes, and the report. Everything started here is stopped on the way
out, also when a stop signal cancels the run (the caller turns that into exit 130).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from rich.console import Console

from redbatch.bench.drive import Target, drive
from redbatch.bench.measure import Meter, batch_sizes
from redbatch.bench.report import Report
from redbatch.bench.settings import Settings
from redbatch.errors import ConfigError, ConnectionFailed, RedbatchError
from redbatch.launch import child_processes, redis_url_or_embedded
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.transport.connection import check_reachable, connect, connection_name, describe_error

WORKER_READY_TIMEOUT_S = 120.0  # a model worker imports torch and loads weights first
_READY_POLL_S = 0.05
# Results of bench's own workers expire soon: a bench on a shared Redis leaves little behind.
_RESULT_TTL_S = 600
_EXIT_CONFIG = 2


def run(settings: Settings, console: Console) -> Report:
    with redis_url_or_embedded(settings.redis_url, console) as url:
        client = connect(url, client_name=connection_name("ops", "bench"))
        try:
            check_reachable(url, client)
            queue = settings.queue or f"bench-{uuid.uuid4().hex[:6]}"
            keys = KeySpace(settings.namespace).queue(queue)
            try:
                return _run_on(settings, console, url, client, keys)
            except redis.RedisError as exc:  # our own calls; the producer's say ConnectionFailed
                raise ConnectionFailed(describe_error(url, exc)) from None
            finally:
                if settings.queue is None:
                    _forget(client, settings.namespace, keys)
        finally:
            client.close()


def _run_on(
    settings: Settings, console: Console, url: str, client: redis.Redis, keys: QueueKeys
) -> Report:
    names = [f"bench-{uuid.uuid4().hex[:6]}-{n}" for n in range(settings.workers)]
    commands = [_worker_command(settings, url, keys.name, name) for name in names]
    with (
        tempfile.TemporaryDirectory(prefix="redbatch-bench-") as logs,
        child_processes(commands, Path(logs)) as procs,
    ):
        if procs:
            console.print(f"starting {len(procs)} workers on queue {keys.name}…")
            _wait_ready(client, keys, names, procs, Path(logs))
        elif next(client.scan_iter(match=keys.worker("*"), count=1000), None) is None:
            raise ConfigError(
                f"no worker serves queue {keys.name} in namespace {settings.namespace}: "
                "start some, or let bench start them with --workers N"
            )
        meter = Meter(client, [p.pid for p in procs])
        target = Target(url, keys.name, _exit_check(procs, Path(logs)))
        tally, seconds, usage = drive(settings, target, meter, console)
        target.check_workers()  # one that died in the run's last moments
    sizes = batch_sizes(client, keys, tally.sampled_ids)
    return Report(
        settings.requests, seconds, tally, usage, sizes, settings.report_settings(url, keys.name)
    )


def _worker_command(settings: Settings, url: str, queue: str, name: str) -> list[str]:
    command = [
        sys.executable, "-m", "redbatch", "worker", queue, "--handler", settings.handler,
        "--redis-url", url, "--namespace", settings.namespace, "--name", name,
        "--log-level", "WARNING", "--result-ttl", str(_RESULT_TTL_S),
    ]  # fmt: skip
    for key, value in settings.handler_options:
        command += ["--handler-option", f"{key}={value}"]
    if settings.max_batch_size is not None:
        command += ["--max-batch-size", str(settings.max_batch_size)]
    if settings.max_wait_ms is not None:
        command += ["--max-wait-ms", str(settings.max_wait_ms)]
    return command


def _wait_ready(
    client: redis.Redis,
    keys: QueueKeys,
    names: list[str],
    procs: list[subprocess.Popen[bytes]],
    logs: Path,
) -> None:
    """Until every worker serves (its heartbeat, written once it serves, exists). No event
    crosses the process boundary, so this polls; a worker that exits ends it at once."""
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    heartbeats = [keys.worker(name) for name in names]
    while client.exists(*heartbeats) < len(heartbeats):
        for index, proc in enumerate(procs):
            code = proc.poll()
            if code is not None:
                raise _start_failure(index, code, logs / f"{index}.log")
        if time.monotonic() > deadline:
            raise RedbatchError(f"the workers did not start within {WORKER_READY_TIMEOUT_S:g} s")
        time.sleep(_READY_POLL_S)


def _exit_check(procs: list[subprocess.Popen[bytes]], logs: Path) -> Callable[[], None]:
    """A check that a worker died during the run: its requests are lost (bench starts no
    scheduler to re-queue them) and the numbers would mislead. It says why, from the log
    that is removed on the way out."""

    def check() -> None:
        for index, proc in enumerate(procs):
            code = proc.poll()
            if code is not None:
                why = _last_line(logs / f"{index}.log")
                raise RedbatchError(f"worker {index} exited with code {code} during the run: {why}")

    return check


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("redbatch: error: ") if lines else "no output"


def _start_failure(index: int, code: int, log: Path) -> RedbatchError:
    message = f"worker {index} exited with code {code} while starting: {_last_line(log)}"
    return ConfigError(message) if code == _EXIT_CONFIG else RedbatchError(message)


def _forget(client: redis.Redis, namespace: str, keys: QueueKeys) -> None:
    """Remove the queue bench made up (its lanes, dead letters, retries, its name in the
    queue set); results, replies and statistics expire by themselves."""
    try:
        client.delete(*keys.streams, keys.dead, keys.delayed)
        client.srem(KeySpace(namespace).queues, keys.name)
    except redis.RedisError:
        pass  # best effort: the run's outcome matters more than this tidy-up
