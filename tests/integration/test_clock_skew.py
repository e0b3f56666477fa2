"""One clock, Redis's (issue 13): producers and workers whose wall clocks are off by seconds
or minutes expire nothing early and run nothing late.

Each worker is a real ``redbatch worker`` process whose ``time.time`` is shifted by
``helpers/skewed_clock/sitecustomize.py``; the producer runs here with its own wall clock
shifted the other way (``helpers.skew.skewed_here``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from helpers.skew import skewed_env, skewed_here
from helpers.workers import start_worker, wait_until
from redbatch import Producer, RequestExpired
from redbatch.protocol.keys import KeySpace


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


@pytest.mark.parametrize("skew_s", [-30, -5, 5, 30])
def test_skewed_clocks_change_no_outcome(
    redis_url: str, redis_client: redis.Redis, namespace: str, queue: str, tmp_path: Path,
    skew_s: int,
) -> None:  # fmt: skip
    """Requests past their deadline (1 s, waited out on Redis's clock) expire; requests with
    10 s to go run - whatever the worker's and the producer's clocks say."""
    stream = KeySpace(namespace).queue(queue).stream
    with skewed_here(-skew_s), Producer.from_url(redis_url, namespace=namespace) as producer:
        late = producer.submit_many(queue, list(range(20)), timeout=1.0)
        deadlines = [int(f[b"deadline"]) for _, f in redis_client.xrange(stream)]
        assert len(deadlines) == 20
        wait_until(
            lambda: server_ms(redis_client) > max(deadlines), timeout=10,
            what="the short deadlines passed on Redis's clock",
        )  # fmt: skip
        fresh = producer.submit_many(queue, list(range(100, 150)), timeout=10.0)
        worker = start_worker(
            redis_url, namespace, [queue], log_dir=str(tmp_path), env=skewed_env(skew_s)
        )
        try:
            for handle in late:
                with pytest.raises(RequestExpired):
                    handle.result(timeout=30)
            assert [h.result(timeout=30) for h in fresh] == list(range(100, 150))
        finally:
            assert worker.stop() == 0
