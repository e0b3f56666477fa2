"""Chaos: SIGKILL a random worker every second while requests flow; count what survives.

    python benchmarks/chaos.py [--requests 5000] [--seconds 8] [--workers 3]

Starts a private redis-server, N `redbatch worker` processes (sleep handler, 0.1 s a batch,
heartbeat TTL 2 s) and a `redbatch scheduler` (a pass every 0.2 s). The producer submits the
requests with Producer.map in chunks spread over the chaos window; every second a random
worker (preferably one holding requests) is killed with SIGKILL and a replacement started.
Prints requests, kills, lost, duplicates, requests run more than once (result attempt > 1),
the longest recovery (kill -> nothing held by the dead worker's consumer any more) and the
total time. Every process started here is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any

import msgpack
import redis

from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys

QUEUE = "chaos"
TICK_S = 0.5  # a map chunk per tick, a kill every other tick


class Fleet:
    """The worker and scheduler processes, all stopped by close()."""

    def __init__(self, url: str, namespace: str, log_dir: str) -> None:
        self.url, self.namespace, self.log_dir = url, namespace, log_dir
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.others: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(f"{self.log_dir}/{name}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "redbatch", *args, "--redis-url", self.url,
                 "--namespace", self.namespace],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start_worker(self) -> str:
        name = f"w-{uuid.uuid4().hex[:8]}"
        self.workers[name] = self._spawn(name, [
            "worker", QUEUE, "--name", name, "--handler", "redbatch.handlers:sleep",
            "--handler-option", "seconds=0.1", "--heartbeat-ttl", "2", "--block-ms", "200",
        ])  # fmt: skip
        return name

    def start_scheduler(self) -> None:
        self.others.append(self._spawn("scheduler", ["scheduler", "--interval", "0.2"]))

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait()

    def close(self) -> None:
        procs = [*self.workers.values(), *self.others]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def held(client: redis.Redis, keys: QueueKeys, consumer: str) -> int:
    return sum(
        len(client.xpending_range(stream, GROUP, "-", "+", 10_000, consumername=consumer))
        for stream in keys.streams
    )


def wait_recovered(client: redis.Redis, keys: QueueKeys, consumer: str, since: float) -> float:
    """Seconds from the kill at ``since`` until the dead consumer holds nothing (10 ms polls)."""
    while held(client, keys, consumer):
        time.sleep(0.01)
    return time.monotonic() - since


def run(args: argparse.Namespace, server: EmbeddedRedis, fleet: Fleet) -> None:
    client = redis.Redis.from_url(server.url)
    keys = KeySpace(fleet.namespace).queue(QUEUE)
    for _ in range(args.workers):
        fleet.start_worker()
    fleet.start_scheduler()
    payloads = [f"req-{i:06d}" for i in range(args.requests)]
    # A chunk per tick over the whole window, so every kill meets a loaded fleet.
    ticks = args.seconds * 2
    size = -(-args.requests // ticks)
    chunks = [payloads[i : i + size] for i in range(0, len(payloads), size)]
    values: list[list[Any] | None] = [None] * len(chunks)
    recoveries: list[float] = []
    rng = random.Random(args.seed)
    kills = 0
    with Producer.from_url(server.url, namespace=fleet.namespace, cancel_on_timeout=False) as prod:

        def submit(i: int) -> None:
            values[i] = prod.map(QUEUE, chunks[i], timeout=300)

        def recover(consumer: str, since: float) -> None:
            recoveries.append(wait_recovered(client, keys, consumer, since))

        threads: list[threading.Thread] = []
        began = time.monotonic()
        for tick in range(ticks + 1):
            time.sleep(max(0.0, began + tick * TICK_S - time.monotonic()))  # the cadence
            if tick < len(chunks):
                threads.append(threading.Thread(target=submit, args=(tick,), daemon=True))
                threads[-1].start()
            if tick == 0 or tick % 2:
                continue
            # Mid-tick, while this tick's chunk runs (at the tick the fleet is idle).
            time.sleep(max(0.0, began + (tick + 0.5) * TICK_S - time.monotonic()))
            names = list(fleet.workers)
            busy = [n for n in names if held(client, keys, n)]
            victim = rng.choice(busy or names)
            fleet.kill(victim)
            kills += 1
            if held(client, keys, victim):
                watcher = threading.Thread(target=recover, args=(victim, time.monotonic()))
                watcher.start()
                threads.append(watcher)
            fleet.start_worker()
        for thread in threads:
            thread.join()
        total = time.monotonic() - began

    lost, duplicates, leftover = report(client, keys, payloads, values, kills, total, recoveries)
    client.close()
    if lost or duplicates or leftover:
        raise SystemExit(1)


def report(
    client: redis.Redis,
    keys: QueueKeys,
    payloads: list[str],
    values: list[list[Any] | None],
    kills: int,
    total: float,
    recoveries: list[float],
) -> tuple[int, int, int]:
    """Print the figures; returns (lost, duplicates, entries left behind)."""
    results = [client.hgetall(name) for name in client.scan_iter(keys.result("*"), count=1000)]
    got = Counter(msgpack.unpackb(r[b"payload"]) for r in results if b"payload" in r)
    returned = [v for chunk in values for v in (chunk or [])]
    lost = sum(1 for p in payloads if not got[p]) + (returned != payloads)
    duplicates = sum(n - 1 for n in got.values()) + client.xlen(keys.dead)
    reran = sum(1 for r in results if int(r[b"attempt"]) > 1)
    leftover = sum(client.xlen(s) for s in keys.streams) + client.zcard(keys.delayed)
    print(f"requests                 {len(payloads)}")
    print(f"kills                    {kills}")
    print(f"lost                     {lost}")
    print(f"duplicates               {duplicates}")
    print(f"run more than once       {reran}")
    print(f"max recovery time        {max(recoveries, default=0.0):.2f} s")
    print(f"left in stream/delayed   {leftover}")
    print(f"total time               {total:.1f} s")
    return lost, duplicates, leftover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir, EmbeddedRedis() as server:
        fleet = Fleet(server.url, f"c{uuid.uuid4().hex[:6]}", log_dir)
        try:
            run(args, server, fleet)
        finally:
            fleet.close()


if __name__ == "__main__":
    main()
