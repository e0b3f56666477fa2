"""Baseline (b) of issue 8: the wire contract's Redis work done with plain redis-py pipelines.

    python benchmarks/loop_same_work.py --redis-url URL [--requests 40000] [--count 256]
    python benchmarks/loop_same_work.py --redis-url URL --sequential [--requests 2000]

This process is the producer; it starts one consumer process (this file with --consume).
Producer: contract entries (`id`, `reply`, `enq`, `deadline`, `payload`) XADDed pipelined by
100, at most 2,000 in flight; it BLMPOPs its reply list and checks every reply
(`[id, "ok", payload]`, the payload it sent). Consumer: XREADGROUP COUNT --count, then one
MULTI per batch: per request HSET of the result hash (status, payload, worker, attempt, enq,
start, end, batch) + PEXPIRE, RPUSH of the reply + PEXPIRE of the reply list, XACK + XDEL.
What it leaves out of redbatch's work: write-once results, deadlines, cancellation, the
started mark, isolation, heartbeats, dead letters.

--hsetex writes each result hash once with its TTL by Redis 8.0's HSETEX FNX (one command
instead of HSET + PEXPIRE, and write-once): the newer-command variant of the same loop.
--count 1 is the same loop without batching. --sequential sends one request at a time and
waits for its reply (the latency floor); it prints latency percentiles too.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
import uuid

import msgpack
import redis
from benchlib import cpu_seconds, emit, latency_ms, make_payloads

GROUP = "workers"
PIPELINE = 100
MAX_IN_FLIGHT = 2_000
REPLY_POP = 1_000
TTL_MS = 3_600_000
DEADLINE_MS = 300_000
BLOCK_MS = 1_000
WAIT_S = 30
STOP_ID = b"stop"


class Keys:
    """The wire contract's key names for one queue (hand-written, as a user of redis-py would)."""

    def __init__(self, namespace: str, queue: str) -> None:
        base = f"{namespace}:{{{queue}}}"
        self.stream = f"{base}:stream"
        self.result_prefix = f"{base}:result:"
        self.reply_prefix = f"{base}:reply:"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def finish(
    client: redis.Redis,
    keys: Keys,
    entries: list[tuple[bytes, dict[bytes, bytes]]],
    hsetex: bool = False,
) -> None:
    """Record one batch's outcomes: one MULTI, as the contract's finish does. ``hsetex``:
    each result hash written once with its TTL by Redis 8's ``HSETEX FNX`` instead."""
    start = now_ms()
    pipe = client.pipeline(transaction=True)
    replies: dict[bytes, list[bytes]] = {}
    batch = str(len(entries))
    for _, fields in entries:
        request_id, payload = fields[b"id"], fields[b"payload"]
        result = keys.result_prefix + request_id.decode()
        mapping = {
            "status": "ok", "payload": payload, "worker": "loop-b", "attempt": "1",
            "enq": fields.get(b"enq", b"0"), "start": start, "end": now_ms(), "batch": batch,
        }  # fmt: skip
        if hsetex:
            flat = [part for pair in mapping.items() for part in pair]
            pipe.execute_command(
                "HSETEX", result, "FNX", "PX", TTL_MS, "FIELDS", len(mapping), *flat
            )
        else:
            pipe.hset(result, mapping=mapping)
            pipe.pexpire(result, TTL_MS)
        replies.setdefault(fields.get(b"reply", b""), []).append(
            msgpack.packb([request_id, b"ok", payload])
        )
    for producer, items in replies.items():
        if producer:
            reply_key = keys.reply_prefix + producer.decode()
            pipe.rpush(reply_key, *items)
            pipe.pexpire(reply_key, TTL_MS)
    ids = [entry_id for entry_id, _ in entries]
    pipe.xack(keys.stream, GROUP, *ids)
    pipe.xdel(keys.stream, *ids)
    pipe.execute()


def consume(url: str, namespace: str, queue: str, count: int, hsetex: bool) -> None:
    """The consumer process: read up to `count` entries per call, finish each batch."""
    client = redis.Redis.from_url(url)
    keys = Keys(namespace, queue)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: the producer made it first
        client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    while True:
        got = client.xreadgroup(GROUP, "c", {keys.stream: ">"}, count=count, block=BLOCK_MS)
        for _, entries in got or ():
            finish(client, keys, entries, hsetex)
            if any(fields[b"id"] == STOP_ID for _, fields in entries):
                return


class Producer:
    """Sends contract entries and checks the replies."""

    def __init__(self, client: redis.Redis, keys: Keys, payloads: list[bytes]) -> None:
        self.client, self.keys, self.payloads = client, keys, payloads
        self.producer_id = f"p{uuid.uuid4().hex[:8]}"
        self.reply_key = keys.reply_prefix + self.producer_id

    def entry(self, index: int) -> dict[str, bytes | str | int]:
        enq = now_ms()
        return {
            "id": str(index), "reply": self.producer_id, "enq": enq,
            "deadline": enq + DEADLINE_MS, "payload": self.payloads[index],
        }  # fmt: skip

    def check(self, replies: list[bytes]) -> None:
        for raw in replies:
            request_id, status, body = msgpack.unpackb(raw)
            if status != b"ok" or body != self.payloads[int(request_id)]:
                raise RuntimeError(f"wrong reply for request {request_id!r}: {status!r}")

    def pop(self) -> list[bytes]:
        popped = self.client.blmpop(WAIT_S, 1, self.reply_key, direction="LEFT", count=REPLY_POP)
        if popped is None:
            raise RuntimeError(f"no reply within {WAIT_S} s")
        replies: list[bytes] = popped[1]
        self.check(replies)
        return replies

    def run_all(self, first: int, last: int) -> None:
        """Requests first..last-1, at most MAX_IN_FLIGHT unanswered."""
        sent, received = first, first
        while received < last:
            while sent < last and sent - received + PIPELINE <= MAX_IN_FLIGHT:
                pipe = self.client.pipeline(transaction=False)
                for index in range(sent, min(last, sent + PIPELINE)):
                    pipe.xadd(self.keys.stream, self.entry(index))
                pipe.execute()
                sent = min(last, sent + PIPELINE)
            received += len(self.pop())

    def run_sequential(self, first: int, last: int) -> list[float]:
        """One request at a time, each waited for; the latency of each, in seconds."""
        latencies = []
        for index in range(first, last):
            began = time.perf_counter()
            self.client.xadd(self.keys.stream, self.entry(index))
            self.pop()
            latencies.append(time.perf_counter() - began)
        return latencies


def run(
    url: str, requests: int, count: int, sequential: bool, hsetex: bool = False
) -> dict[str, object]:
    namespace, queue = f"loopb{uuid.uuid4().hex[:6]}", "bench"
    keys = Keys(namespace, queue)
    client = redis.Redis.from_url(url)
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--redis-url", url, "--count", str(count),
         "--consume", namespace, queue, *(["--hsetex"] if hsetex else [])]
    )  # fmt: skip
    producer = Producer(client, keys, make_payloads(requests + 1))
    latencies: list[float] = []
    try:
        producer.run_all(requests, requests + 1)  # warm-up: the consumer is up and reading
        cpu_before, own_before = cpu_seconds(consumer.pid), time.process_time()
        began = time.perf_counter()
        if sequential:
            latencies = producer.run_sequential(0, requests)
        else:
            producer.run_all(0, requests)
        seconds = time.perf_counter() - began
        consumer_cpu = cpu_seconds(consumer.pid) - cpu_before
        producer_cpu = time.process_time() - own_before
    finally:
        client.xadd(keys.stream, {"id": STOP_ID, "payload": b""})
        consumer.wait(WAIT_S)
        client.close()
    result: dict[str, object] = {
        "requests": requests,
        "seconds": seconds,
        "throughput_rps": requests / seconds,
        "consumer_cpu_s": consumer_cpu,
        "consumer_cpu_us_per_request": consumer_cpu / requests * 1e6,
        "producer_cpu_us_per_request": producer_cpu / requests * 1e6,
    }
    if sequential:
        result["latency_ms"] = latency_ms(latencies)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--count", type=int, default=256, help="XREADGROUP COUNT")
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--consume", nargs=2, metavar=("NAMESPACE", "QUEUE"))
    parser.add_argument("--hsetex", action="store_true", help="results by HSETEX FNX (Redis 8)")
    args = parser.parse_args()
    if args.consume:
        consume(args.redis_url, *args.consume, count=args.count, hsetex=args.hsetex)
    else:
        emit(run(args.redis_url, args.requests, args.count, args.sequential, args.hsetex))


if __name__ == "__main__":
    main()
