"""``redbatch inspect`` and ``redbatch dlq`` against a real Redis, with worker (and scheduler)
processes putting requests in each place a request can be."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from helpers import cli
from helpers.entries import now_ms, pack, queue_keys, wait_results
from helpers.workers import WorkerFactory, WorkerProcess, wait_serving, wait_until
from redbatch import Producer
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP, QueueKeys

HANDLERS = "helpers.handlers"


def conn(redis_url: str, namespace: str) -> tuple[str, ...]:
    return ("--redis-url", redis_url, "--namespace", namespace)


def add(client: redis.Redis, keys: QueueKeys, request_id: str, **fields: Any) -> str:
    """XADD one request (payload ``{"n": request_id}``) as a producer would; its entry id."""
    priority = fields.get("priority", "normal")
    entry = build_entry(request_id, pack({"n": request_id}), enq=now_ms(), **fields)
    return client.xadd(keys.stream_for(priority), entry).decode()  # type: ignore[arg-type]


def states(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``inspect --json`` sightings by state (each test has at most one per state)."""
    found = document["found"]
    by_state = {s["state"]: s for s in found}
    assert len(by_state) == len(found), found
    return by_state


def result_of(client: redis.Redis, keys: QueueKeys, request_id: str) -> dict[bytes, bytes]:
    return wait_results(client, keys, [request_id])[request_id]


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_finds_a_waiting_request_in_its_lane(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, other_queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    queue_keys(redis_client, namespace, other_queue)
    add(redis_client, keys, "noise")
    entry_id = add(redis_client, keys, "w1", priority="high", attempt=2)

    # Without --queue every queue of the namespace is searched.
    document = cli.run_json("inspect", "w1", *conn(redis_url, namespace))
    assert sorted(document["queues"]) == sorted([queue, other_queue])
    waiting = states(document)["waiting"]
    assert waiting["queue"] == queue
    assert waiting["lane"] == "high"
    assert waiting["entry_id"] == entry_id
    assert waiting["since_ms"] == int(entry_id.split("-")[0])
    assert waiting["attempt"] == 2
    assert 0 < waiting["enq_ms"] <= now_ms()
    assert waiting["payload_bytes"] == len(pack({"n": "w1"}))
    assert waiting["fields"]["id"] == "w1"

    result = cli.run("inspect", "w1", "--queue", queue, *conn(redis_url, namespace))
    assert result.returncode == 0, result.stderr
    assert f"request w1 in queue {queue}:" in result.stdout
    assert "waiting in lane high since" in result.stdout
    assert f"attempt 2, lane high, entry {entry_id}" in result.stdout


def test_inspect_shows_the_worker_holding_a_request_mid_batch(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    worker = wait_serving(
        worker_factory(
            [queue], f"{HANDLERS}:block_until_file", "--handler-option", f"release={release}"
        )
    )
    keys = queue_keys(redis_client, namespace, queue)
    # attempt 2: as if a crashed worker had run it once already (a redelivery runs alone).
    entry_id = add(redis_client, keys, "h1", attempt=2)

    def started() -> bool:
        rows = redis_client.xpending_range(keys.stream, GROUP, entry_id, entry_id, 1)
        return bool(rows) and rows[0]["times_delivered"] >= 2

    wait_until(started, what="the worker to start h1")
    # Make the entry look held for a minute (same consumer, delivery count unchanged).
    redis_client.xclaim(keys.stream, GROUP, worker.name, 0, [entry_id], idle=60_000, justid=True)

    held = states(cli.run_json("inspect", "h1", "--queue", queue, *conn(redis_url, namespace)))
    held = held["held"]
    assert held["consumer"] == worker.name
    assert held["worker_alive"] is True
    assert held["started"] is True
    assert held["deliveries"] == 2
    assert held["attempt"] == 2
    assert held["lane"] == "normal"
    assert held["entry_id"] == entry_id
    assert held["idle_ms"] >= 60_000
    assert now_ms() - held["held_since_ms"] >= 60_000

    text = cli.run("inspect", "h1", *conn(redis_url, namespace)).stdout
    assert f"held by worker {worker.name} (heartbeat alive) since" in text
    assert "attempt 2 (started: delivered 2 times), lane normal" in text

    release.touch()
    assert result_of(redis_client, keys, "h1")[b"status"] == b"ok"


def test_inspect_shows_a_delayed_retry_and_when_it_is_due(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    # No scheduler: the retry stays in the delayed set.
    wait_serving(worker_factory([queue], f"{HANDLERS}:retry_always"))
    keys = queue_keys(redis_client, namespace, queue)
    before = now_ms()
    add(redis_client, keys, "d1", priority="low")
    wait_until(lambda: redis_client.zcard(keys.delayed), what="the retry of d1")

    found = states(cli.run_json("inspect", "d1", "--queue", queue, *conn(redis_url, namespace)))
    assert set(found) == {"delayed"}
    delayed = found["delayed"]
    assert delayed["attempt"] == 2
    assert delayed["lane"] == "low"
    assert delayed["due_ms"] > before
    [(_member, score)] = redis_client.zrange(keys.delayed, 0, -1, withscores=True)
    assert delayed["due_ms"] == int(score)

    text = cli.run("inspect", "d1", *conn(redis_url, namespace)).stdout
    assert "delayed: retry due" in text
    assert "attempt 2, lane low" in text


def test_inspect_prints_a_finished_request_and_its_decoded_payload(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    worker = wait_serving(worker_factory([queue]))
    payload = {"label": "cat", "emb": np.arange(6, dtype=np.float32).reshape(2, 3)}
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        producer.submit(queue, payload, id="f1", timeout=30).result(30)

    found = states(cli.run_json("inspect", "f1", *conn(redis_url, namespace)))
    assert set(found) == {"finished"}
    finished = found["finished"]
    assert finished["status"] == "ok"
    assert finished["worker"] == worker.name
    assert finished["attempt"] == 1
    assert finished["batch"] >= 1
    assert 0 < finished["expires_in_ms"] <= 3600 * 1000
    assert finished["payload"]["ct"] == "msgpack"
    assert finished["payload"]["value"] == {
        "label": "cat",
        "emb": {"ndarray": {"dtype": "float32", "shape": [2, 3]}},
    }

    text = cli.run("inspect", "f1", "--queue", queue, *conn(redis_url, namespace)).stdout
    assert f"finished ok by worker {worker.name}" in text
    assert '"label": "cat"' in text
    assert "<ndarray float32 2x3>" in text


def test_inspect_shows_a_cancelled_request_before_and_after_a_worker_sees_it(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, "c1")
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        producer.cancel(queue, "c1")

    found = states(cli.run_json("inspect", "c1", *conn(redis_url, namespace)))
    assert set(found) == {"waiting", "cancelled"}
    assert 0 < found["cancelled"]["expires_in_ms"] <= 3600 * 1000

    wait_serving(worker_factory([queue]))
    assert wait_results(redis_client, keys, ["c1"])["c1"][b"status"] == b"cancelled"
    found = states(cli.run_json("inspect", "c1", *conn(redis_url, namespace)))
    assert set(found) == {"finished", "cancelled"}
    assert found["finished"]["status"] == "cancelled"
    text = cli.run("inspect", "c1", *conn(redis_url, namespace)).stdout
    assert "finished cancelled" in text
    assert "cancelled (cancel key set, expires in" in text


def test_inspect_shows_a_dead_request_with_its_reason(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    wait_serving(worker_factory([queue], f"{HANDLERS}:retry_always", "--max-attempts", "1"))
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, "x1")
    assert result_of(redis_client, keys, "x1")[b"status"] == b"dead"

    found = states(cli.run_json("inspect", "x1", "--queue", queue, *conn(redis_url, namespace)))
    assert set(found) == {"finished", "dead"}
    dead = found["dead"]
    assert "max_attempts reached" in dead["reason"]
    assert "model warming up" in dead["reason"]
    [(dead_id, _fields)] = redis_client.xrange(keys.dead)
    assert dead["dead_entry_id"] == dead_id.decode()
    assert dead["attempt"] == 1
    assert found["finished"]["status"] == "dead"
    assert found["finished"]["error"] == dead["reason"]

    text = cli.run("inspect", "x1", *conn(redis_url, namespace)).stdout
    assert "dead since" in text and f"(dead letter {dead_id.decode()})" in text
    assert "reason: retried 1 times, max_attempts reached" in text


def test_inspect_not_found_is_one_line_and_exit_1(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    line = cli.one_error_line(cli.run("inspect", "nope", *conn(redis_url, namespace)), 1)
    assert "no request nope in" in line and queue in line
    line = cli.one_error_line(
        cli.run("inspect", "nope", "--queue", queue, *conn(redis_url, namespace)), 1
    )
    assert line == f"redbatch: error: no request nope in queue {queue}"
    # A result whose TTL ran out is gone: not found.
    redis_client.hset(keys.result("gone"), mapping={"status": "ok", "payload": pack(1)})
    redis_client.pexpire(keys.result("gone"), 1)
    wait_until(lambda: not redis_client.exists(keys.result("gone")), what="the result to expire")
    cli.one_error_line(cli.run("inspect", "gone", *conn(redis_url, namespace)), 1)
    document = cli.run_json("inspect", "gone", *conn(redis_url, namespace), code=1)
    assert document["found"] == []


def test_inspect_bad_arguments_exit_2_and_unreachable_redis_exits_3(namespace: str) -> None:
    line = cli.one_error_line(cli.run("inspect", "bad id", "--namespace", namespace), 2)
    assert "invalid request id" in line
    line = cli.one_error_line(cli.run("inspect", "r1", "--queue", "a b"), 2)
    assert "invalid queue name" in line
    line = cli.one_error_line(cli.run("inspect", "r1", "--redis-url", "redis://127.0.0.1:1/0"), 3)
    assert "cannot use Redis at redis://127.0.0.1:1/0" in line


# -- dlq ---------------------------------------------------------------------------------------


def make_dead(
    redis_client: redis.Redis,
    worker_factory: WorkerFactory,
    namespace: str,
    queue: str,
    ids: list[str],
    priority: str = "normal",
) -> QueueKeys:
    """Dead letters for ``ids`` (retry_always, max 1 attempt), oldest first; the worker
    stopped afterwards so nothing runs what a test replays until it says so."""
    worker = wait_serving(
        worker_factory([queue], f"{HANDLERS}:retry_always", "--max-attempts", "1")
    )
    keys = queue_keys(redis_client, namespace, queue)
    for request_id in ids:
        add(redis_client, keys, request_id, priority=priority)
        assert result_of(redis_client, keys, request_id)[b"status"] == b"dead"
    assert worker.stop() == 0
    return keys


def test_dlq_list_newest_first_and_show_every_field(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = make_dead(redis_client, worker_factory, namespace, queue, ["a1", "a2", "a3"])
    dead_ids = [i.decode() for i, _f in redis_client.xrange(keys.dead)]

    listed = cli.run_json("dlq", queue, "list", "--limit", "2", *conn(redis_url, namespace))
    assert listed["total"] == 3
    assert [e["request_id"] for e in listed["entries"]] == ["a3", "a2"]
    first = listed["entries"][0]
    assert first["entry_id"] == dead_ids[2]
    assert first["dead_at_ms"] == int(dead_ids[2].split("-")[0])
    assert (first["attempt"], first["lane"], first["replayed"]) == (1, "normal", 0)
    assert "max_attempts reached" in first["reason"]

    text = cli.run("dlq", queue, "list", *conn(redis_url, namespace)).stdout.splitlines()
    assert text[0] == f"3 dead letters in queue {queue}, newest first:"
    assert text[1].split()[:2] == ["ENTRY", "REQUEST"]
    assert [line.split()[1] for line in text[2:]] == ["a3", "a2", "a1"]

    # By request id and by dead entry id.
    shown = cli.run_json("dlq", queue, "show", "a2", *conn(redis_url, namespace))
    [letter] = shown["dead_letters"]
    assert letter["entry_id"] == dead_ids[1]
    assert letter["fields"]["id"] == "a2"
    assert "max_attempts reached" in letter["fields"]["reason"]
    assert letter["payload"]["value"] == {"n": "a2"}
    by_entry = cli.run("dlq", queue, "show", dead_ids[0], *conn(redis_url, namespace))
    assert by_entry.returncode == 0, by_entry.stderr
    assert f"dead letter {dead_ids[0]} of queue {queue}" in by_entry.stdout
    assert f'payload (msgpack, {len(pack({"n": "a1"}))} bytes): {{"n": "a1"}}' in by_entry.stdout
    assert "reason" in by_entry.stdout

    line = cli.one_error_line(cli.run("dlq", queue, "show", "zz", *conn(redis_url, namespace)), 1)
    assert line == f"redbatch: error: no dead letter zz in queue {queue}"


def test_dlq_replay_runs_a_dead_request_again_until_it_ends_ok(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
    scheduler_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "failing"
    marker.touch()
    scheduler_factory()  # moves the worker's delayed retries back to the lane
    wait_serving(
        worker_factory(
            [queue], f"{HANDLERS}:retry_while_file", "--handler-option", f"marker={marker}",
            "--max-attempts", "2",
        )
    )  # fmt: skip
    keys = queue_keys(redis_client, namespace, queue)
    add(redis_client, keys, "p1", priority="high", deadline=now_ms() + 60_000)
    assert result_of(redis_client, keys, "p1")[b"status"] == b"dead"
    [(first_dead, fields)] = redis_client.xrange(keys.dead)
    assert fields[b"attempt"] == b"2"

    # Replayed while the handler still fails: it runs both attempts again and dies again,
    # carrying the audit fields the replay put on the re-queued entry.
    replayed = cli.run("dlq", queue, "replay", "p1", *conn(redis_url, namespace))
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed p1: dead letter {first_dead.decode()} (p1) -> lane high" in replayed.stdout
    assert "(replay #1)" in replayed.stdout

    def died_again() -> dict[bytes, bytes] | None:
        rows = redis_client.xrange(keys.dead)
        return rows[0][1] if rows and rows[0][0] != first_dead else None

    again = wait_until(died_again, what="p1 to die again")
    assert again[b"replayed"] == b"1"
    assert 0 < int(again[b"replayed_at"]) <= now_ms()
    assert again[b"attempt"] == b"2"  # it started over at 1
    assert b"deadline" not in again
    assert again[b"priority"] == b"high"
    assert redis_client.xlen(keys.dead) == 1

    # The handler is fixed: the second replay ends ok, and the result is the new outcome.
    marker.unlink()
    document = cli.run_json("dlq", queue, "replay", "p1", *conn(redis_url, namespace))
    [result] = document["results"]
    assert document["replayed"] == 1
    assert (result["outcome"], result["lane"], result["replayed"]) == ("replayed", "high", 2)

    def ok() -> dict[bytes, bytes] | None:
        found = redis_client.hgetall(keys.result("p1"))
        return found if found.get(b"status") == b"ok" else None

    outcome = wait_until(ok, what="p1 to end ok")
    assert outcome[b"attempt"] == b"1"
    inspected = states(cli.run_json("inspect", "p1", *conn(redis_url, namespace)))
    assert set(inspected) == {"finished"}
    assert inspected["finished"]["payload"]["value"] == {"n": "p1"}
    assert redis_client.xlen(keys.dead) == 0

    # Replaying again is a no-op line.
    noop = cli.run("dlq", queue, "replay", "p1", *conn(redis_url, namespace))
    assert noop.returncode == 0, noop.stderr
    assert f"no dead letter p1 in queue {queue}: nothing done" in noop.stdout
    assert "replayed 0 dead letters" in noop.stdout
    assert redis_client.hget(keys.result("p1"), "status") == b"ok"


def test_dlq_replay_all_requeues_every_dead_letter_into_its_lane(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: WorkerFactory,
) -> None:
    keys = make_dead(redis_client, worker_factory, namespace, queue, ["b1", "b2"], "low")
    redis_client.xadd(keys.dead, {"reason": "unreadable delayed retry", "member": "junk"})
    dead_ids = [i.decode() for i, _f in redis_client.xrange(keys.dead)]

    document = cli.run_json("dlq", queue, "replay", "--all", *conn(redis_url, namespace))
    assert document["replayed"] == 2
    by_outcome = {(r["outcome"], r["request_id"]) for r in document["results"]}
    assert by_outcome == {("replayed", "b1"), ("replayed", "b2"), ("refused", "")}
    refused = next(r for r in document["results"] if r["outcome"] == "refused")
    assert refused["dead_entry_id"] == dead_ids[2]
    assert "no valid request id" in refused["detail"]

    # The audit fields are on the re-queued entries; attempt and reason are gone; the dead
    # results are deleted; only the unreplayable letter stays.
    lane = {f[b"id"]: f for _i, f in redis_client.xrange(keys.stream_for("low"))}
    assert set(lane) == {b"b1", b"b2"}
    for fields in lane.values():
        assert fields[b"replayed"] == b"1"
        assert b"replayed_at" in fields
        assert b"attempt" not in fields and b"reason" not in fields
    assert not redis_client.exists(keys.result("b1"), keys.result("b2"))
    assert [i.decode() for i, _f in redis_client.xrange(keys.dead)] == [dead_ids[2]]

    text = cli.run("dlq", queue, "replay", "--all", *conn(redis_url, namespace)).stdout
    assert f"not replayed: dead letter {dead_ids[2]} (no request id)" in text
    assert "replayed 0 dead letters" in text

    wait_serving(worker_factory([queue]))
    results = wait_results(redis_client, keys, ["b1", "b2"])
    assert {r[b"status"] for r in results.values()} == {b"ok"}


def test_dlq_replay_needs_ids_or_all(redis_url: str, namespace: str, queue: str) -> None:
    line = cli.one_error_line(cli.run("dlq", queue, "replay", *conn(redis_url, namespace)), 2)
    assert "--all" in line
    both = cli.run("dlq", queue, "replay", "x", "--all", *conn(redis_url, namespace))
    cli.one_error_line(both, 2)
    cli.one_error_line(cli.run("dlq", "bad queue", "list", *conn(redis_url, namespace)), 2)


def test_dlq_purge_asks_unless_yes(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)

    def fill(n: int) -> None:
        for i in range(n):
            redis_client.xadd(keys.dead, {"id": f"z{i}", "reason": "test", "payload": pack(i)})

    fill(3)
    # Not on a terminal and no --yes: refused, nothing deleted.
    line = cli.one_error_line(cli.run("dlq", queue, "purge", *conn(redis_url, namespace)), 2)
    assert "refusing to purge 3 dead letters" in line and "--yes" in line
    assert redis_client.xlen(keys.dead) == 3

    # On a terminal: "n" keeps them, "y" deletes them.
    declined = cli.run_on_terminal("dlq", queue, "purge", *conn(redis_url, namespace), answer="n\n")
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert f"Delete all 3 dead letters of queue {queue}?" in declined.stderr
    assert redis_client.xlen(keys.dead) == 3
    confirmed = cli.run_on_terminal(
        "dlq", queue, "purge", *conn(redis_url, namespace), answer="y\n"
    )
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert f"purged 3 dead letters of queue {queue}" in confirmed.stdout
    assert redis_client.xlen(keys.dead) == 0

    fill(2)
    assert cli.run_json("dlq", queue, "purge", "--yes", *conn(redis_url, namespace)) == {
        "queue": queue,
        "purged": 2,
    }
    assert redis_client.xlen(keys.dead) == 0
    empty = cli.run("dlq", queue, "purge", *conn(redis_url, namespace))
    assert empty.returncode == 0, empty.stderr
    assert f"no dead letters in queue {queue}: nothing to purge" in empty.stdout
