"""Baseline worker: the hand-written redis-py loop redbatch replaces (no batching window, no
isolation, no write-once results, no deadlines). Reads a stream through a group, echoes each
payload onto the producer's reply list, acks and deletes. Run by echo_throughput.py."""

from __future__ import annotations

import contextlib
import sys

import redis


def main(url: str, stream: str, reply: str) -> None:
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: the group exists
        client.xgroup_create(stream, "workers", id="0", mkstream=True)
    while True:
        got = client.xreadgroup("workers", "raw", {stream: ">"}, count=32, block=1000)
        for _, entries in got or ():
            pipe = client.pipeline(transaction=True)
            ids = []
            for entry_id, fields in entries:
                if fields.get(b"stop"):
                    return
                pipe.rpush(reply, fields[b"payload"])
                ids.append(entry_id)
            if ids:
                pipe.xack(stream, "workers", *ids)
                pipe.xdel(stream, *ids)
                pipe.execute()


if __name__ == "__main__":
    main(*sys.argv[1:4])
