"""Baseline (a) of issue 8: the minimal hand-written redis-py loop, no wire contract at all.

    python benchmarks/loop_minimal.py --redis-url redis://127.0.0.1:PORT/0 [--requests 40000]

This process is the producer: XADD pipelined by 100 (field `payload` only), at most 2,000 in
flight, BLMPOP of its reply list; it starts one consumer process (this file with --consume):
XREADGROUP COUNT 256, then per batch one pipeline of RPUSH (every payload onto the reply
list) + XACK + XDEL. Prints one JSON line: throughput, and the consumer's CPU per message
(read from /proc over the timed window only). Replies are counted, not decoded: this is the
floor, not a fair rival.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
import uuid

import redis
from benchlib import cpu_seconds, emit, make_payloads

GROUP = "workers"
PIPELINE = 100
MAX_IN_FLIGHT = 2_000
READ_COUNT = 256
REPLY_POP = 1_000
STOP_FIELD = b"stop"
BLOCK_MS = 1_000
WAIT_S = 30


def consume(url: str, stream: str, reply: str, count: int) -> None:
    """The consumer process: read up to `count`, push the payloads back, ack and delete."""
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: the producer made it first
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    while True:
        got = client.xreadgroup(GROUP, "c", {stream: ">"}, count=count, block=BLOCK_MS)
        for _, entries in got or ():
            ids = [entry_id for entry_id, _ in entries]
            payloads = [f[b"payload"] for _, f in entries if b"payload" in f]
            pipe = client.pipeline(transaction=False)
            if payloads:
                pipe.rpush(reply, *payloads)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.execute()
            if any(STOP_FIELD in f for _, f in entries):
                return


def produce(client: redis.Redis, stream: str, reply: str, payloads: list[bytes]) -> None:
    """Send every payload, keeping at most MAX_IN_FLIGHT unanswered; return once all came back."""
    total, sent, received = len(payloads), 0, 0
    while received < total:
        while sent < total and sent - received + PIPELINE <= MAX_IN_FLIGHT:
            pipe = client.pipeline(transaction=False)
            for payload in payloads[sent : sent + PIPELINE]:
                pipe.xadd(stream, {"payload": payload})
            pipe.execute()
            sent = min(total, sent + PIPELINE)
        popped = client.blmpop(WAIT_S, 1, reply, direction="LEFT", count=REPLY_POP)
        if popped is None:
            raise RuntimeError(f"no reply within {WAIT_S} s ({received}/{total} received)")
        received += len(popped[1])


def run(url: str, requests: int) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    stream, reply = f"loopa:{tag}:stream", f"loopa:{tag}:reply"
    client = redis.Redis.from_url(url)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--redis-url", url, "--consume", stream, reply]
    )
    try:
        payloads = make_payloads(requests)
        produce(client, stream, reply, payloads[:1])  # warm-up: the consumer is up and reading
        cpu_before, own_before = cpu_seconds(consumer.pid), time.process_time()
        began = time.perf_counter()
        produce(client, stream, reply, payloads)
        seconds = time.perf_counter() - began
        consumer_cpu = cpu_seconds(consumer.pid) - cpu_before
        producer_cpu = time.process_time() - own_before
    finally:
        client.xadd(stream, {STOP_FIELD: b"1"})
        consumer.wait(WAIT_S)
        client.delete(stream, reply)
        client.close()
    return {
        "requests": requests,
        "seconds": seconds,
        "throughput_rps": requests / seconds,
        "consumer_cpu_s": consumer_cpu,
        "consumer_cpu_us_per_request": consumer_cpu / requests * 1e6,
        "producer_cpu_us_per_request": producer_cpu / requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--consume", nargs=2, metavar=("STREAM", "REPLY"))
    args = parser.parse_args()
    if args.consume:
        consume(args.redis_url, *args.consume, count=READ_COUNT)
    else:
        emit(run(args.redis_url, args.requests))


if __name__ == "__main__":
    main()
