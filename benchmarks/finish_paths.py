"""The finish step alone, per server: finish_batch.lua against the same writes as one MULTI
with Redis 8's ``HSETEX ... FNX`` (the path issue 20 asked to measure before building).

    python benchmarks/finish_paths.py                       # redis7, redis8, valkey8
    python benchmarks/finish_paths.py --servers redis8 --batches 400 --batch 64
    python benchmarks/finish_paths.py --servers redis7 --batch 256 --before old_finish_batch.lua

Per server and path: FLUSHALL, add ``batches * batch`` entries and read them all into one
consumer's pending list first, so that while the finish calls run the server does nothing
else; then finish them batch by batch, each call waiting for its reply (as the cluster
writer does). Redis CPU is the server process's user + system time over the finish phase
only (/proc), divided by the requests finished.

The MULTI path is the common case of a batch only (every item ran, no result exists yet,
no guard set): ``EXISTS`` over the result keys and the guard keys (which a complete path
needs to notice the rare cases and send them through the script), ``HSETEX FNX`` per
result, one ``RPUSH`` + ``PEXPIRE`` for the producer's replies, ``XACK`` + ``XDEL``. It is
the cheapest the newer commands can make the finish step: an upper bound of their gain.

``--before FILE``: also the path ``lua-before``, the same calls to another finish_batch.lua
(e.g. ``git show main:src/redbatch/protocol/lua/finish_batch.lua``), interleaved with
``lua`` round by round on the same server: an A/B of a change to the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import cpu_seconds

from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.fields import OK, Outcome
from redbatch.protocol.finish_args import Finished, RunFacts, finish_batch_args
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys
from redbatch.protocol.scripts import Scripts
from redbatch.servers import SERVERS, server_build

TTL_MS = 3_600_000
WORKER = "w1"
PRODUCER = "p1"
BODY = b"\x81\xa1i\xcd\x01\x00" + b"x" * 40  # a small msgpack payload, as echo returns


def prepare(client: redis.Redis, keys: QueueKeys, count: int) -> list[tuple[str, str]]:
    """``count`` entries read into WORKER's pending list: (entry id, request id) each."""
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(keys.stream, {"id": f"r{i}", "reply": PRODUCER, "payload": BODY})
    pipe.execute()
    read = client.xreadgroup(GROUP, WORKER, {keys.stream: ">"}, count=count)
    return [(eid.decode(), fields[b"id"].decode()) for eid, fields in read[0][1]]


def finish_lua(script: Any, keys: QueueKeys, batch: list[tuple[str, str]]) -> None:
    facts = RunFacts(attempt=1, enq=1_700_000_000_000)
    items = [
        Finished(eid, Outcome(rid, OK, BODY), reply=PRODUCER, facts=facts) for eid, rid in batch
    ]
    common: dict[str, str | int] = {"worker": WORKER, "start": 1, "end": 2, "batch": len(batch)}
    script_keys, argv = finish_batch_args(
        keys, items, ttl_ms=TTL_MS, dead_maxlen=1000, common=common
    )
    script(keys=script_keys, args=argv)


def finish_multi(client: redis.Redis, keys: QueueKeys, batch: list[tuple[str, str]]) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("EXISTS", *(keys.result(rid) for _, rid in batch))
    pipe.execute_command("EXISTS", *(keys.guard(rid) for _, rid in batch))
    replies = []
    for _, rid in batch:
        pipe.execute_command(
            "HSETEX", keys.result(rid), "FNX", "PX", TTL_MS, "FIELDS", 8,
            "status", OK, "payload", BODY, "attempt", 1, "enq", 1_700_000_000_000,
            "worker", WORKER, "start", 1, "end", 2, "batch", len(batch),
        )  # fmt: skip
        replies.append(Outcome(rid, OK, BODY).encode_reply())
    pipe.rpush(keys.reply(PRODUCER), *replies)
    pipe.pexpire(keys.reply(PRODUCER), TTL_MS)
    ids = [eid for eid, _ in batch]
    pipe.xack(keys.stream, GROUP, *ids)
    pipe.xdel(keys.stream, *ids)
    pipe.execute()


def run_path(
    server: EmbeddedRedis, path: str, batches: int, size: int, before: str = ""
) -> dict[str, float]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    keys = KeySpace("fp").queue("echo")
    entries = prepare(client, keys, batches * size)
    script = Scripts(client).finish_batch
    if path == "lua-before":
        script = client.register_script(before)
    client.script_load(script.script)  # loaded before the measured phase
    assert server.pid is not None
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    for at in range(0, len(entries), size):
        batch = entries[at : at + size]
        if path != "multi":
            finish_lua(script, keys, batch)
        else:
            finish_multi(client, keys, batch)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
    assert client.xlen(keys.stream) == 0 and client.llen(keys.reply(PRODUCER)) == len(entries)
    client.close()
    n = len(entries)
    return {"per_s": n / wall, "server_us_per_request": 1e6 * cpu / n}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="", help="another finish_batch.lua to A/B against")
    args = parser.parse_args(argv)
    before = Path(args.before).read_text(encoding="utf-8") if args.before else ""
    rows: list[dict[str, Any]] = []
    for name in args.servers.split(","):
        with EmbeddedRedis(command=server_build(name).command) as server:
            paths = ["lua", "multi"] if name == "redis8" else ["lua"]
            if before:
                paths.append("lua-before")
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
            for i in range(args.rounds):
                for path in paths if i % 2 == 0 else paths[::-1]:
                    runs[path].append(run_path(server, path, args.batches, args.batch, before))
            for path, samples in runs.items():
                row: dict[str, Any] = {"server": name, "path": path, "batch": args.batch}
                for field in ("per_s", "server_us_per_request"):
                    row[field] = round(statistics.median(s[field] for s in samples), 2)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
