"""Redis out of memory mid-run (maxmemory reached, noeviction): results are kept, not dropped.

A batch's result write refused with OOM is treated as a lost connection is: the worker keeps
the results, writes them again with backoff once memory is freed, and logs one line when the
refusals begin and one when they end. Before, the batch was dropped and its requests stayed
pending to a live worker until the hung-worker rule (330 s).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from helpers.entries import wait_results
from helpers.workers import assert_drained, start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.keys import KeySpace

REQUESTS = 64


def test_results_refused_for_memory_are_written_once_memory_is_freed(tmp_path: Path) -> None:
    namespace, queue = f"oom{uuid.uuid4().hex[:6]}", "oom"
    keys = KeySpace(namespace).queue(queue)
    with EmbeddedRedis(directory=tmp_path, extra_args=["--maxmemory-policy", "noeviction"]) as (
        server
    ):
        slow = ("--handler-option", "seconds=0.3", "--max-batch-size", "8")
        worker = start_worker(
            server.url, namespace, [queue], log_dir=str(tmp_path),
            handler="redbatch.handlers:sleep", extra=slow,
        )  # fmt: skip
        wait_serving(worker)
        client = redis.Redis.from_url(server.url)
        try:
            with Producer.from_url(server.url, namespace=namespace) as producer:
                ids = [h.id for h in producer.submit_many(queue, range(REQUESTS), timeout=600)]
                # The first batch is written; then memory runs out with batches running.
                wait_until(lambda: client.exists(*[keys.result(i) for i in ids]), what="a result")
                client.config_set("maxmemory", "1")
                # "Redis refused a command" (the batch dropped) before this fix; "Redis
                # refused a write" (results kept) after it.
                wait_until(lambda: "Redis refused a" in worker.log(), what="a refused write")
                assert "maxmemory" in worker.log()
                written = sum(client.exists(keys.result(i)) for i in ids)
                assert written < REQUESTS  # the refusal happened mid-run
                client.config_set("maxmemory", "0")
                freed = time.monotonic()
                results = wait_results(client, keys, ids, timeout=60)
                print(f"{written} of {REQUESTS} written when memory ran out; the rest "
                      f"{time.monotonic() - freed:.2f} s after it was freed")  # fmt: skip
            assert {r[b"status"] for r in results.values()} == {b"ok"}
            # Kept and written, not dropped and run again (a re-queued started entry would
            # show attempt 2).
            assert {r[b"attempt"] for r in results.values()} == {b"1"}
            assert_drained(client, keys.stream)
            text = wait_until(lambda: (t := worker.log()) and "reachable again" in t and t)
            assert text.count("Redis refused a write") == 1, text  # one line per episode
            assert text.count("Redis reachable again") == 1, text
        finally:
            client.close()
            assert worker.stop() == 0, worker.log()
