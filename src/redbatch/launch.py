"""Start and stop what a run on this machine needs (``redbatch demo``, ``redbatch bench``): a
private redis-server unless a URL is given, and child processes that are stopped on the way
out — also on Ctrl-C or SIGTERM — so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from redbatch.embedded import EmbeddedRedis, find_redis_server
from redbatch.errors import ConfigError

STOP_GRACE_S = 10.0


@contextlib.contextmanager
def redis_url_or_embedded(url: str | None, console: Console) -> Iterator[str]:
    """``url`` as given, or (None) the URL of a private redis-server removed on the way out."""
    if url:
        yield url
        return
    if find_redis_server() is None:
        raise ConfigError(
            "redis-server is not on PATH: install it (apt-get install redis-server) "
            "or set REDBATCH_REDIS_URL to a Redis you have"
        )
    with EmbeddedRedis() as server:
        console.print(f"started a private redis-server on {server.url}")
        yield server.url


def child_env() -> dict[str, str]:
    """The environment for redbatch children: their settings come as options, so a
    ``REDBATCH_*`` variable of ours must not override or contradict them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDBATCH_")}
    # One torch thread per worker: on a small box torch's spinning threads starve Redis.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@contextlib.contextmanager
def child_processes(
    commands: list[list[str]], log_dir: Path | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run the commands (output to ``log_dir/<index>.log`` when given, else inherited); on
    the way out (also on Ctrl-C) SIGTERM them, then kill stragglers after a grace period."""
    env = child_env()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, command in enumerate(commands):
            log = None if log_dir is None else log_dir / f"{index}.log"
            procs.append(_start(command, env, log))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start(command: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    # A new session: a Ctrl-C at the terminal reaches only us, and we stop the children in
    # order (a worker drains on SIGTERM) instead of them all dying at once.
    if log is None:
        return subprocess.Popen(command, env=env, start_new_session=True)
    with open(log, "wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
