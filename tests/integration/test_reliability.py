"""End-to-end reliability: real workers and a real scheduler, killed, hung, stopped and fed
bad input, on a private redis-server. Each test checks the guarantees of docs/wire-contract.md:
every request ends exactly once, nothing is lost or left pending, bad input is contained.

Recovery is kept fast with ``--heartbeat-ttl 2`` and a scheduler pass every 0.2 s. Waits are
bounded polls of Redis (or of a process's state); the only timed sleeps are the chaos loop's
cadence (one kill per second, one map chunk every half second).
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis

from helpers.entries import (
    WAIT_S,
    add_atomically,
    dead_letters,
    id_entries,
    pack,
    queue_keys,
    result_hashes,
    text,
    wait_results,
)
from helpers.workers import WorkerProcess, assert_drained, wait_serving, wait_until
from redbatch import Producer, RequestDead
from redbatch.embedded import EmbeddedRedis
from redbatch.protocol.fields import decode_reply
from redbatch.protocol.keys import GROUP, QueueKeys
from redbatch.worker.heartbeat import EXIT_BATCH_TIMEOUT

Factory = Callable[..., WorkerProcess]

FAST_TTL = ("--heartbeat-ttl", "2")
# A map's timeout is also its requests' deadline: far beyond any healthy run, so nothing
# expires unless recovery is broken.
MAP_TIMEOUT_S = 120.0


def pending(client: redis.Redis, keys: QueueKeys) -> int:
    return int(client.xpending(keys.stream, GROUP)["pending"])


def unpack_payload(result: dict[bytes, bytes]) -> Any:
    return msgpack.unpackb(result[b"payload"])


@dataclass(frozen=True)
class Caught:
    """An entry a killed worker held: its request and attempt."""

    request_id: str
    attempt: int
    started: bool  # delivery count >= 2: its worker had begun running it


def held_entries(client: redis.Redis, keys: QueueKeys, consumer: str) -> list[Caught]:
    """What ``consumer`` holds (a killed worker's, read before the scheduler reaps it)."""
    rows = client.xpending_range(keys.stream, GROUP, "-", "+", 10_000, consumername=consumer)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xrange(keys.stream, row["message_id"], row["message_id"])
    return [
        Caught(
            found[0][1][b"id"].decode(),
            int(found[0][1].get(b"attempt", b"1")),
            row["times_delivered"] >= 2,
        )
        for row, found in zip(rows, pipe.execute(), strict=True)
        if found
    ]


def serving(worker: WorkerProcess) -> bool:
    return worker.proc.poll() is None and f"worker {worker.name} serving" in worker.log()


def discarded_outcomes(workers: list[WorkerProcess]) -> int:
    """Second outcomes that write-once refused (a request that ran again after a reclaim)."""
    found = (re.findall(r"(\d+) results on \S+ already existed", w.log()) for w in workers)
    return sum(int(n) for counts in found for n in counts)


# -- 1. chaos ----------------------------------------------------------------------------------

CHAOS_REQUESTS = 5000
CHAOS_SECONDS = 8
CHAOS_WORKERS = 3
CHAOS_TICK_S = 0.5  # a map chunk per tick, a kill every other tick (once per second)


@dataclass
class Chaos:
    """What the chaos loop did and what the producer got back."""

    values: list[list[Any] | None]
    errors: list[BaseException] = field(default_factory=list)
    kills: int = 0
    kills_under_load: int = 0  # the victim held requests when it died
    caught: list[list[Caught]] = field(default_factory=list)  # per kill
    everyone: list[WorkerProcess] = field(default_factory=list)
    total_s: float = 0.0


def run_chaos(
    producer: Producer,
    client: redis.Redis,
    keys: QueueKeys,
    start: Callable[[], WorkerProcess],
    live: list[WorkerProcess],
    chunks: list[list[str]],
) -> Chaos:
    """A map chunk every tick and a SIGKILL (plus a replacement worker) every other tick;
    then wait for every map to return."""
    chaos = Chaos(values=[None] * len(chunks), everyone=list(live))
    rng = random.Random(20240601)

    def run_map(index: int) -> None:
        try:
            chaos.values[index] = producer.map(keys.name, chunks[index], timeout=MAP_TIMEOUT_S)
        except BaseException as exc:  # reported by the test
            chaos.errors.append(exc)

    threads = [threading.Thread(target=run_map, args=(i,), daemon=True) for i in range(len(chunks))]
    began = time.monotonic()
    for tick in range(CHAOS_SECONDS * 2 + 1):
        # The chaos cadence (not synchronisation): wait for this tick's moment.
        time.sleep(max(0.0, began + tick * CHAOS_TICK_S - time.monotonic()))
        if tick < len(threads):
            threads[tick].start()
        if tick == 0 or tick % 2:
            continue
        # Kill mid-tick, while the workers run this tick's chunk (at the tick itself they
        # have just finished the last one and would be idle).
        time.sleep(max(0.0, began + (tick + 0.5) * CHAOS_TICK_S - time.monotonic()))
        victim = rng.choice([w for w in live if serving(w)] or live)
        victim.kill()
        caught = held_entries(client, keys, victim.name)  # what the reaper will find
        chaos.caught.append(caught)
        chaos.kills_under_load += bool(caught)
        chaos.kills += 1
        live.remove(victim)
        live.append(start())
        chaos.everyone.append(live[-1])
    for thread in threads:
        thread.join(MAP_TIMEOUT_S)
        assert not thread.is_alive(), "a map never returned"
    chaos.total_s = time.monotonic() - began
    return chaos


def test_chaos_sigkill_a_worker_every_second_loses_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    # 0.1 s a batch keeps the workers busy for most of each tick, so kills catch batches
    # running. A request caught running three times would end dead by design (it looks like a
    # worker-killer): this test is about loss and duplication, so it allows more attempts.
    sleep_args = ("--handler-option", "seconds=0.1", "--max-attempts", "10", *FAST_TTL)

    def start() -> WorkerProcess:
        return worker_factory([queue], "redbatch.handlers:sleep", *sleep_args)

    live = [start() for _ in range(CHAOS_WORKERS)]
    for worker in live:
        wait_serving(worker)
    scheduler_factory("--max-attempts", "10")
    payloads = [f"req-{i:05d}" for i in range(CHAOS_REQUESTS)]
    size = -(-CHAOS_REQUESTS // (CHAOS_SECONDS * 2))
    chunks = [payloads[i : i + size] for i in range(0, CHAOS_REQUESTS, size)]
    with Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as producer:
        chaos = run_chaos(producer, redis_client, keys, start, live, chunks)

    returned = [v for chunk in chaos.values for v in (chunk or [])]
    results = result_hashes(redis_client, keys)
    by_payload = Counter(unpack_payload(r) for r in results.values() if b"payload" in r)
    reran = sum(1 for r in results.values() if int(r[b"attempt"]) > 1)
    lost = sum(1 for p in payloads if by_payload[p] == 0)
    duplicates = sum(n - 1 for n in by_payload.values() if n > 1)
    duplicates += redis_client.xlen(keys.dead)  # a second, conflicting final record
    caught = Counter(c.request_id for kill in chaos.caught for c in kill if c.started)
    held = [dict(Counter(c.attempt for c in kill)) for kill in chaos.caught]
    print(
        f"\nchaos: requests={CHAOS_REQUESTS} kills={chaos.kills} "
        f"(holding work {chaos.kills_under_load}, held per kill by attempt {held}) "
        f"lost={lost} duplicates={duplicates} ran_more_than_once={reran} "
        f"second_outcomes_discarded={discarded_outcomes(chaos.everyone)} "
        f"total={chaos.total_s:.1f}s"
    )

    assert not chaos.errors, (chaos.errors, dead_letters(redis_client, keys))
    assert chaos.kills == CHAOS_SECONDS
    # The producer saw each outcome once, in input order, and every one is the payload.
    assert returned == payloads
    assert Counter(r[b"status"] for r in results.values()) == {b"ok": CHAOS_REQUESTS}
    assert len(results) == CHAOS_REQUESTS  # one result hash per request id
    assert lost == 0
    assert duplicates == 0
    # Only kills cost attempts: one per kill that caught the request running; one merely
    # held (read, not started) goes back as it was.
    attempts = {rid: int(r[b"attempt"]) for rid, r in results.items()}
    assert {rid: n for rid, n in attempts.items() if n > 1} == {
        rid: 1 + n for rid, n in caught.items()
    }
    assert reran == len(caught)
    assert redis_client.xlen(keys.stream) == 0
    assert pending(redis_client, keys) == 0
    assert redis_client.zcard(keys.delayed) == 0


# -- 2. a payload that kills its worker ----------------------------------------------------------


def test_payload_that_kills_its_worker_ends_dead_and_spares_its_batch(
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    normal = [f"n{i}" for i in range(31)]
    poison = {"id": "poison", "payload": pack("kill-me")}
    entries = [*id_entries(normal[:15]), poison, *id_entries(normal[15:])]
    # Added before any worker runs: the first read (COUNT 32) takes all 32 as one batch.
    add_atomically(redis_client, keys.stream, entries)
    scheduler_factory("--max-attempts", "3")

    def start() -> WorkerProcess:
        return worker_factory(
            [queue], "helpers.handlers:kill_on_poison", "--max-attempts", "3", *FAST_TTL
        )

    live = [start(), start()]
    deaths: list[WorkerProcess] = []
    deadline = time.monotonic() + 60
    while not redis_client.exists(keys.result("poison")):
        assert time.monotonic() < deadline, "kill-me never ended"
        for worker in [w for w in live if w.proc.poll() is not None]:
            live.remove(worker)
            deaths.append(worker)
            live.append(start())
        time.sleep(0.05)  # bounded poll of process state and Redis

    results = wait_results(redis_client, keys, ["poison", *normal])
    poison = text(results["poison"])
    assert poison["status"] == "dead"
    assert poison["attempt"] == "3"
    assert "died" in poison["error"]
    [letter] = dead_letters(redis_client, keys)
    assert letter["id"] == "poison"
    assert "died" in letter["reason"]
    assert letter["attempt"] == "3"
    for rid in normal:
        result = text(results[rid])
        assert result["status"] == "ok", (rid, result)
        assert unpack_payload(results[rid]) == rid
        # They were in the crashed batch: back at attempt 2, each then ran on its own.
        assert result["attempt"] == "2", (rid, result)
        assert result["batch"] == "1", (rid, result)
    # One death per attempt of kill-me, each by its own SIGKILL.
    for worker in live:
        if worker.proc.poll() is not None:
            deaths.append(worker)
    assert [w.proc.returncode for w in deaths] == [-9, -9, -9]
    assert_drained(redis_client, keys.stream)


# -- 3. a hung batch -----------------------------------------------------------------------------


def test_hung_batch_exits_its_worker_and_every_item_ends_once(
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    normal = [f"n{i}" for i in range(10)]
    entries = [{"id": "h", "reply": "phang", "payload": pack("hang")}]
    entries += [{"id": rid, "reply": "phang", "payload": pack(rid)} for rid in normal]
    add_atomically(redis_client, keys.stream, entries)
    hung = worker_factory([queue], "helpers.handlers:hang_on", "--batch-timeout", "2", *FAST_TTL)
    hung.expected_exit = EXIT_BATCH_TIMEOUT
    wait_until(lambda: pending(redis_client, keys) == 11, WAIT_S, "the hung worker's read")
    scheduler_factory()
    rescuer = wait_serving(worker_factory([queue], "redbatch.handlers:echo", *FAST_TTL))

    assert hung.proc.wait(timeout=WAIT_S) == EXIT_BATCH_TIMEOUT
    assert "batch_timeout" in hung.log()
    results = wait_results(redis_client, keys, ["h", *normal])
    for rid in normal:
        assert text(results[rid])["status"] == "ok"
        assert unpack_payload(results[rid]) == rid
        assert text(results[rid])["worker"] == rescuer.name
    hang = text(results["h"])
    assert hang["status"] in ("ok", "dead"), hang
    letters = [d for d in dead_letters(redis_client, keys) if d.get("id") == "h"]
    assert len(letters) == (1 if hang["status"] == "dead" else 0)
    # Exactly one outcome per request reached its producer's reply list.
    wait_until(lambda: redis_client.llen(keys.reply("phang")) >= 11, WAIT_S, "11 replies")
    replies = [decode_reply(r) for r in redis_client.lrange(keys.reply("phang"), 0, -1)]
    assert Counter(r.id for r in replies) == Counter(["h", *normal])
    assert {r.id: r.status for r in replies}["h"] == hang["status"]
    assert_drained(redis_client, keys.stream)


# -- 4. SIGTERM under load -----------------------------------------------------------------------


def test_sigterm_during_load_hands_back_and_reclaims_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    args = ("--handler-option", "seconds=0.01", "--max-batch-size", "8", *FAST_TTL)
    stopped, staying = (
        wait_serving(worker_factory([queue], "redbatch.handlers:sleep", *args)) for _ in range(2)
    )
    scheduler_factory()
    payloads = [f"t{i}" for i in range(2000)]
    out: dict[str, Any] = {}

    with Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as producer:

        def run_map() -> None:
            try:
                out["values"] = producer.map(queue, payloads, timeout=MAP_TIMEOUT_S)
            except BaseException as exc:  # reported by the main thread
                out["error"] = exc

        thread = threading.Thread(target=run_map, daemon=True)
        thread.start()

        # Mid-way: the heartbeats report some items done (and the map is far from over).
        def items_done() -> int:
            counts = [redis_client.hget(keys.worker(w.name), "items") for w in (stopped, staying)]
            return sum(int(n or 0) for n in counts)

        wait_until(lambda: items_done() >= 200, WAIT_S, "200 items done")
        stopped.stop(timeout=WAIT_S)
        thread.join(MAP_TIMEOUT_S)

    assert stopped.proc.returncode == 0, stopped.log()
    handed = re.search(r"handed (\d+) unstarted entries back", stopped.log())
    assert handed is not None, stopped.log()
    assert "error" not in out, out.get("error")
    assert out["values"] == payloads
    results = result_hashes(redis_client, keys)
    assert len(results) == len(payloads)
    assert sorted(unpack_payload(r) for r in results.values()) == sorted(payloads)
    assert {r[b"status"] for r in results.values()} == {b"ok"}
    # Nothing had to be reclaimed by the scheduler: every request ran once, at attempt 1.
    assert {r[b"attempt"] for r in results.values()} == {b"1"}
    ran_by = Counter(r[b"worker"].decode() for r in results.values())
    assert ran_by[stopped.name] >= 100, ran_by  # it was stopped under load, not before
    assert ran_by[staying.name] > 0, ran_by
    print(f"\nsigterm: handed back {handed.group(1)}, ran {dict(ran_by)}")
    assert_drained(redis_client, keys.stream)


# -- 5. retries through the delayed set --------------------------------------------------------


def test_retry_until_max_attempts_ends_dead(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    retry_args = ("--max-attempts", "3", "--retry-delay", "0.05")
    wait_serving(worker_factory([queue], "helpers.handlers:retry_always", *retry_args))
    scheduler_factory()
    with Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as producer:
        handle = producer.submit(queue, "again")
        with pytest.raises(RequestDead) as raised:
            handle.result(timeout=WAIT_S)
    assert "max_attempts" in raised.value.reason
    result = text(redis_client.hgetall(keys.result(handle.id)))
    assert result["status"] == "dead"
    assert result["attempt"] == "3"
    assert "retried 3 times" in result["error"]
    [letter] = dead_letters(redis_client, keys)
    assert letter["id"] == handle.id
    assert letter["attempt"] == "3"
    assert "max_attempts" in letter["reason"]
    assert redis_client.zcard(keys.delayed) == 0
    assert_drained(redis_client, keys.stream)


def test_retryable_exception_type_retries_once_and_succeeds(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
    tmp_path: Path,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    marker = tmp_path / "failed-once"
    retry_args = ("--retry-on", "builtins.ConnectionError", "--retry-delay", "0.05")
    option = ("--handler-option", f"marker={marker}")
    wait_serving(
        worker_factory([queue], "helpers.handlers:connection_error_once", *option, *retry_args)
    )
    scheduler_factory()
    with Producer.from_url(redis_url, namespace=namespace, cancel_on_timeout=False) as producer:
        handle = producer.submit(queue, {"x": 1})
        assert handle.result(timeout=WAIT_S) == {"x": 1}
    assert marker.exists()  # the first attempt did fail
    result = text(redis_client.hgetall(keys.result(handle.id)))
    assert result["status"] == "ok"
    assert result["attempt"] == "2"
    assert redis_client.xlen(keys.dead) == 0
    assert redis_client.zcard(keys.delayed) == 0
    assert_drained(redis_client, keys.stream)


# -- 6. malformed entries from redis-cli -------------------------------------------------------


def test_malformed_entries_from_redis_cli_are_dead_lettered_and_the_worker_serves_on(
    redis_server: EmbeddedRedis,
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    worker_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    worker = wait_serving(worker_factory([queue]))

    def cli(*args: str) -> None:
        done = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), *args],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert done.returncode == 0 and "ERR" not in done.stdout, done.stdout + done.stderr

    cli("XADD", keys.stream, "*", "ct", "json", "payload", '{"x": 1}')  # no id
    cli("XADD", keys.stream, "*", "id", "m-attempt", "attempt", "zero", "payload", "1")
    cli("XADD", keys.stream, "*", "id", "m-ct", "ct", "yaml", "payload", "x: 1")
    wait_until(lambda: redis_client.xlen(keys.dead) == 3, WAIT_S, "3 dead letters")

    letters = dead_letters(redis_client, keys)
    reasons = {d.get("id", ""): d["reason"] for d in letters}
    assert set(reasons) == {"", "m-attempt", "m-ct"}
    assert "'id'" in reasons[""]
    assert "'attempt'" in reasons["m-attempt"]
    assert "'ct'" in reasons["m-ct"]
    for rid in ("m-attempt", "m-ct"):
        result = text(redis_client.hgetall(keys.result(rid)))
        assert result["status"] == "dead"
        assert result["error"] == reasons[rid]
    assert worker.proc.poll() is None
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "still here", timeout=WAIT_S) == "still here"
    assert "Traceback" not in worker.log()
    assert_drained(redis_client, keys.stream)


def test_dead_worker_costs_an_attempt_only_to_what_it_had_started(
    redis_client: redis.Redis, namespace: str, queue: str, scheduler_factory: Factory
) -> None:
    """The chaos test found innocent requests dead-lettered: read in bulk (and about to be
    handed back) by workers that were killed, three times over. A worker marks a batch
    started (delivery count 2) before running it; only that costs an attempt."""
    keys = queue_keys(redis_client, namespace, queue)
    entries = [{"id": rid, "attempt": 3, "payload": pack(rid)} for rid in ("ran", "held")]
    add_atomically(redis_client, keys.stream, entries)
    read = redis_client.xreadgroup(GROUP, "ghost", {keys.stream: ">"}, count=2)
    ran_id, held_id = (entry_id for entry_id, _fields in read[0][1])
    redis_client.xclaim(keys.stream, GROUP, "ghost", 0, [ran_id], justid=True, retrycount=2)
    scheduler_factory("--max-attempts", "3")

    wait_until(lambda: redis_client.exists(keys.result("ran")), WAIT_S, "ran dead-lettered")
    wait_until(lambda: pending(redis_client, keys) == 0, WAIT_S, "both reaped")
    assert text(redis_client.hgetall(keys.result("ran")))["status"] == "dead"
    assert not redis_client.exists(keys.result("held"))
    [(_entry_id, fields)] = redis_client.xrange(keys.stream)
    assert text(fields)["id"] == "held"
    assert text(fields)["attempt"] == "3"  # requeued as it was, not dead-lettered
    assert held_id not in {entry_id for entry_id, _ in redis_client.xrange(keys.stream)}
