"""Redis goes away mid-batch and comes back: the worker keeps the results it could not write,
writes them once Redis is back, and says so in one line per outage (not one per attempt)."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from helpers.servers import suite_server
from helpers.workers import start_worker, wait_until
from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.keys import GROUP, KeySpace


def test_results_of_a_batch_that_ends_while_redis_is_down_are_written_when_it_is_back(
    tmp_path: Path,
) -> None:
    namespace, queue = f"o{uuid.uuid4().hex[:6]}", "outage"
    keys = KeySpace(namespace).queue(queue)
    (tmp_path / "redis").mkdir()
    with EmbeddedRedis(
        directory=tmp_path / "redis",
        appendonly=True,
        extra_args=["--appendfsync", "always"],
        command=suite_server().command,
    ) as server:
        worker = start_worker(
            server.url, namespace, [queue], log_dir=str(tmp_path),
            handler="redbatch.handlers:sleep",
            extra=("--handler-option", "seconds=1.5", "--max-batch-size", "4"),
        )  # fmt: skip
        client = redis.Redis.from_url(server.url)
        try:
            with Producer.from_url(server.url, namespace=namespace) as producer:
                handles = [producer.submit(queue, i, timeout=60) for i in range(4)]
                # The batch has started (delivery count 2) and runs for 1.5 s...
                wait_until(
                    lambda: any(
                        r["times_delivered"] >= 2
                        for r in client.xpending_range(keys.stream, GROUP, "-", "+", 10)
                    ),
                    what="the batch to start",
                )
                # ...and ends while Redis is down: its write fails.
                server.kill()
                wait_until(lambda: "Redis unavailable" in worker_log(worker.log_path), timeout=30)
                server.restart()
                assert [h.result(timeout=60) for h in handles] == [0, 1, 2, 3]
            assert client.xlen(keys.stream) == 0
            log = wait_until(
                lambda: (text := worker_log(worker.log_path)) and "reachable again" in text and text
            )
            assert log.count("Redis unavailable") == 1, log
            assert log.count("Redis reachable again") == 1, log
        finally:
            client.close()
            assert worker.stop() == 0, worker.log()


def worker_log(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
