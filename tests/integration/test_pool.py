"""The worker pool (``redbatch worker --processes N``) with real child processes: it serves,
replaces a child that was killed or hung, gives up past its restart budget, and drains every
child on SIGTERM with nothing stranded."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from helpers.cli import run
from helpers.metrics import free_port_run, scrape
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.protocol.keys import GROUP, KeySpace

pytestmark = pytest.mark.integration
Factory = Callable[..., WorkerProcess]
WAIT_S = 60.0


def start_pool(
    redis_url: str, namespace: str, queue: str, tmp_path: Path, handler: str, *extra: str
) -> WorkerProcess:
    pool = start_worker(
        redis_url, namespace, [queue], log_dir=str(tmp_path), handler=handler,
        extra=("--processes", "2", "--heartbeat-ttl", "2", *extra),
    )  # fmt: skip
    return pool


def wait_children(pool: WorkerProcess, count: int = 2) -> None:
    """Each child logs its own "worker <pool>-<i> serving" into the pool's log."""
    for i in range(count):
        marker = f"worker {pool.name}-{i} serving"
        wait_until(lambda m=marker: m in pool.log() or pool.proc.poll() is not None, WAIT_S, marker)
        assert pool.proc.poll() is None, pool.log()


def child_pids(
    client: redis.Redis, namespace: str, queue: str, pool: WorkerProcess
) -> dict[str, int]:
    keys = KeySpace(namespace).queue(queue)
    found = {}
    for i in range(2):
        name = f"{pool.name}-{i}"
        pid = client.hget(keys.worker(name), "pid")
        if pid is not None:
            found[name] = int(pid)
    return found


def status_workers(redis_url: str, namespace: str) -> list[dict[str, object]]:
    result = run("status", "--json", "--redis-url", redis_url, "--namespace", namespace)
    assert result.returncode == 0, result.stderr
    workers: list[dict[str, object]] = json.loads(result.stdout)["workers"]
    return workers


def assert_nothing_pending(client: redis.Redis, namespace: str, queue: str) -> None:
    for stream in KeySpace(namespace).queue(queue).streams:
        if client.exists(stream):
            assert client.xpending(stream, GROUP)["pending"] == 0, stream


def test_a_pool_serves_and_status_shows_each_child(
    redis_url: str, namespace: str, queue: str, tmp_path: Path
) -> None:
    port = free_port_run(3)  # the pool's port and its two children's
    pool = start_pool(
        redis_url, namespace, queue, tmp_path, "helpers.handlers:pid", "--metrics-port", str(port)
    )
    try:
        wait_children(pool)
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            pids = set(producer.map(queue, range(200), chunk=4, timeout=WAIT_S))
        names = {w["name"] for w in status_workers(redis_url, namespace)}
        assert names == {f"{pool.name}-0", f"{pool.name}-1"}
        assert pool.proc.pid not in pids  # the parent runs no handler
        assert len(pids) >= 1
        wait_until(lambda: _get(port, "/readyz") == 200, WAIT_S, "pool ready")
        assert _get(port, "/healthz") == 200
        samples = scrape(port)
        workers = {
            dict(labels).get("worker")
            for name, labels in samples
            if name == "redbatch_requests_total"
        }
        assert workers == {f"{pool.name}-0", f"{pool.name}-1"}
    finally:
        assert pool.stop(WAIT_S) == 0, pool.log()[-3000:]


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_a_killed_child_is_replaced_and_nothing_is_lost(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, tmp_path: Path,
    scheduler_factory: Factory,
) -> None:  # fmt: skip
    scheduler_factory()
    pool = start_pool(
        redis_url, namespace, queue, tmp_path, "redbatch.handlers:sleep",
        "--handler-option", "seconds=0.05", "--max-batch-size", "4",
    )  # fmt: skip
    try:
        wait_children(pool)
        before = wait_until(
            lambda: len(p := child_pids(redis_client, namespace, queue, pool)) == 2 and p
        )
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            handles = [producer.submit(queue, i, timeout=WAIT_S * 2) for i in range(400)]
            wait_until(lambda: sum(h.done() for h in handles) >= 40, WAIT_S, "some served")
            victim = f"{pool.name}-0"
            os.kill(before[victim], signal.SIGKILL)
            wait_until(
                lambda: child_pids(redis_client, namespace, queue, pool).get(victim, before[victim])
                != before[victim], WAIT_S, "the child replaced",
            )  # fmt: skip
            assert [h.result(WAIT_S) for h in handles] == list(range(400))
        assert f"worker {victim} died of SIGKILL; restarted" in pool.log()
    finally:
        assert pool.stop(WAIT_S) == 0, pool.log()[-3000:]


def test_a_hung_child_is_replaced(
    redis_url: str, namespace: str, queue: str, tmp_path: Path
) -> None:
    pool = start_pool(
        redis_url, namespace, queue, tmp_path, "helpers.handlers:hang_on",
        "--batch-timeout", "1", "--max-attempts", "1",
    )  # fmt: skip
    try:
        wait_children(pool)
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            producer.submit(queue, "hang", timeout=WAIT_S)
            wait_until(lambda: "exited 4 (a batch outlived batch_timeout); restarted" in pool.log(),
                       WAIT_S, "the hung child restarted")  # fmt: skip
            assert producer.call(queue, "after", timeout=WAIT_S) == "after"
            # Whichever child read "hang" was replaced: three children have served in all.
            serving = re.compile(rf"worker {pool.name}-\d serving ")
            wait_until(
                lambda: len(serving.findall(pool.log())) == 3, WAIT_S, "the replacement serving"
            )
    finally:
        assert pool.stop(WAIT_S) == 0, pool.log()[-3000:]


def test_the_pool_gives_up_past_its_restart_budget(
    redis_url: str, namespace: str, queue: str, tmp_path: Path
) -> None:
    # Every child fails at start (its handler cannot be imported): 5 restarts, then the end.
    pool = start_pool(redis_url, namespace, queue, tmp_path, "helpers.no_such_module:f")
    assert pool.proc.wait(WAIT_S * 2) == 6
    log = pool.log()
    assert log.count("restarted (pid") == 5
    assert "restart budget spent (5 in 60 s): the pool exits 6" in log


def test_sigterm_drains_every_child_and_strands_nothing(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, tmp_path: Path,
    worker_factory: Factory,
) -> None:  # fmt: skip
    pool = start_pool(
        redis_url, namespace, queue, tmp_path, "redbatch.handlers:sleep",
        "--handler-option", "seconds=0.2", "--max-batch-size", "4",
    )  # fmt: skip
    wait_children(pool)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        handles = [producer.submit(queue, i, timeout=WAIT_S * 2) for i in range(100)]
        wait_until(lambda: any(h.done() for h in handles), WAIT_S, "serving")
        assert pool.stop(WAIT_S) == 0, pool.log()[-3000:]
        log = pool.log()
        for i in range(2):
            assert f"worker {pool.name}-{i} stopped after" in log
        assert "pool stopped" in log
        assert_nothing_pending(redis_client, namespace, queue)
        assert not status_workers(redis_url, namespace)
        # What the pool did not run waits in the stream for the next worker.
        wait_serving(worker_factory([queue]))
        assert [h.result(WAIT_S) for h in handles] == list(range(100))


def test_gpus_gives_each_child_its_device(
    redis_url: str, namespace: str, queue: str, tmp_path: Path
) -> None:
    """No GPU here: what is tested is the CUDA_VISIBLE_DEVICES each child is started with."""
    pool = start_worker(
        redis_url, namespace, [queue], log_dir=str(tmp_path),
        handler="helpers.handlers:cuda_devices", extra=("--gpus", "3,5"),
    )  # fmt: skip
    try:
        wait_children(pool)
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            seen: set[str] = set()
            wait_until(
                lambda: seen.update(producer.map(queue, range(16), chunk=1, timeout=WAIT_S))
                or seen == {"3", "5"}, WAIT_S, "both devices answering",
            )  # fmt: skip
        assert "CUDA_VISIBLE_DEVICES=3" in pool.log() and "CUDA_VISIBLE_DEVICES=5" in pool.log()
    finally:
        assert pool.stop(WAIT_S) == 0, pool.log()[-3000:]
