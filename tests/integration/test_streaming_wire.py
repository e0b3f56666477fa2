"""The streaming wire records, written by a real worker and read back as another language's
producer would: chunk records on the reply list, the kept chunk stream (through the
``redis-cli`` binary), the final reply last."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import msgpack
import redis

from helpers.entries import add_atomically, pack, queue_keys, wait_results
from helpers.workers import WorkerProcess, wait_serving
from redbatch.embedded import EmbeddedRedis

Factory = Callable[..., WorkerProcess]


def test_chunks_reach_the_reply_list_and_the_kept_stream_before_the_final_reply(
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    add_atomically(
        redis_client,
        keys.stream,
        [
            # json: what redis-cli prints below is readable text.
            {
                "id": "s1",
                "reply": "pcli",
                "stream": "1",
                "ct": "json",
                "payload": '{"tag": "a", "n": 3}',
            },
            {"id": "s2", "reply": "pcli", "payload": pack({"tag": "b", "n": 2})},  # no interest
        ],
    )
    wait_serving(worker_factory([queue], "helpers.stream_handlers:tokens"))
    results = wait_results(redis_client, keys, ["s1", "s2"])
    assert json.loads(results["s1"][b"payload"]) == "a:done"
    assert msgpack.unpackb(results["s2"][b"payload"]) == "b:done"

    records = [msgpack.unpackb(x, raw=True) for x in redis_client.lrange(keys.reply("pcli"), 0, -1)]
    chunks = [r for r in records if len(r) == 5 and r[1] == b"chunk"]
    ends = [r for r in records if len(r) == 5 and r[1] == b"end"]
    assert ends == [[b"s1", b"end", 1, 3, b""]]  # Final: the end mark, seq = its chunk count
    finals = [r for r in records if len(r) == 3]
    assert [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in chunks] == [
        (b"s1", b"chunk", 1, seq, f"a:{seq}") for seq in range(3)
    ]
    assert records.index(ends[0]) < records.index(next(f for f in finals if f[0] == b"s1"))
    assert sorted(f[0] for f in finals) == [b"s1", b"s2"]
    # Only the request that asked for its chunks has them kept.
    assert not redis_client.exists(keys.chunks("s2"))
    assert 0 < redis_client.pttl(keys.chunks("s1")) <= 3600 * 1000

    def cli(*args: str) -> list[str]:
        done = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), *args],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        return done.stdout.split()

    # From any sequence number: everything after seq 0 of attempt 1.
    after_first = cli("XRANGE", keys.chunks("s1"), "(1-0", "+")
    assert after_first == ["1-1", "chunk", '"a:1"', "1-2", "chunk", '"a:2"', "1-3", "end"]
