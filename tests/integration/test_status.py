"""``redbatch status`` against a real Redis, real workers and a real scheduler."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from helpers import subprocess_env
from helpers.entries import add_atomically, queue_keys
from helpers.terminal import PtyProcess
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer
from redbatch.ops.status import collect
from redbatch.ops.status.model import QueueStatus, Snapshot, WorkerStatus, entry_ms
from redbatch.protocol import stats
from redbatch.protocol.keys import GROUP, KeySpace

Factory = Callable[..., WorkerProcess]
RUN_TIMEOUT_S = 60.0
SLEEP = "redbatch.handlers:sleep"


def redbatch(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = subprocess_env() | {"COLUMNS": "200"} | (env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "redbatch", *args],
        env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip


def status_json(redis_url: str, namespace: str) -> dict[str, Any]:
    result = redbatch("status", "--json", "--redis-url", redis_url, "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def status_rows(redis_url: str, namespace: str) -> dict[str, list[str]]:
    """The text tables' rows by their first cell (queue or worker name)."""
    result = redbatch("status", "--redis-url", redis_url, "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    return {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}


def snapshot(client: redis.Redis, namespace: str) -> Snapshot:
    return collect(client, KeySpace(namespace), time.time())


def queue_of(snap: Snapshot, name: str) -> QueueStatus:
    return next(q for q in snap.queues if q.name == name)


def worker_of(snap: Snapshot, name: str) -> WorkerStatus | None:
    return next((w for w in snap.workers if w.name == name), None)


def request(request_id: str) -> dict[str, str]:
    return {"id": request_id, "ct": "json", "payload": "1"}


def address(redis_url: str) -> str:
    """host:port of a redis://host:port/0 URL, as status names the server."""
    return redis_url.removeprefix("redis://").rsplit("/", 1)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- counts --------------------------------------------------------------------------------


def test_counts_json_and_the_scheduler_cleaning_up(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    # Two entries held by a worker SIGKILLed mid-batch: in flight to a dead consumer.
    doomed = wait_serving(
        worker_factory([queue], SLEEP, "--handler-option", "seconds=60", "--heartbeat-ttl", "2")
    )
    add_atomically(redis_client, keys.stream, [request("held-0"), request("held-1")])
    wait_until(lambda: redis_client.xpending(keys.stream, GROUP)["pending"] == 2, 10, "2 held")
    doomed.kill()
    wait_until(lambda: not redis_client.exists(keys.worker(doomed.name)), 10, "heartbeat gone")
    # Then, with no worker left to take them: entries in every lane, delayed and dead ones.
    first: dict[str, str] = {}
    for priority, count in (("high", 1), ("normal", 3), ("low", 2)):
        for i in range(count):
            entry_id = redis_client.xadd(keys.stream_for(priority), request(f"{priority}-{i}"))
            first.setdefault(priority, entry_id.decode())
    later_ms = (time.time() + 3600) * 1000
    redis_client.zadd(keys.delayed, {b"retry-a": later_ms, b"retry-b": later_ms})
    redis_client.xadd(keys.dead, {"id": "bad", "reason": "malformed: test"})

    now = time.time()
    q = queue_of(collect(redis_client, KeySpace(namespace), now), queue)
    lanes = {lane.priority: lane for lane in q.lanes}
    assert (q.waiting, q.in_flight, q.delayed, q.dead, q.lag) == (6, 2, 2, 1, 6)
    assert (q.consumers_alive, q.consumers_dead) == (0, 1)
    counts = [(lane.length, lane.waiting, lane.in_flight, lane.lag) for lane in q.lanes]
    assert counts == [(1, 1, 0, 1), (5, 3, 2, 3), (2, 2, 0, 2)]  # high, normal, low
    # The oldest *waiting* entry, not the older ones the dead worker still holds.
    now_ms = int(now * 1000)
    for priority, entry_id in first.items():
        assert lanes[priority].oldest_waiting_age_ms == now_ms - (entry_ms(entry_id) or 0)
    assert q.oldest_waiting_age_ms == lanes["high"].oldest_waiting_age_ms  # added first
    assert (q.window.items, q.window.wait_p50_ms, q.window.items_per_s) == (0, None, 0.0)

    before_ms = int(time.time() * 1000)
    out = status_json(redis_url, namespace)
    after_ms = int(time.time() * 1000)
    assert (out["schema"], out["namespace"]) == (1, namespace)
    assert out["redis"] == address(redis_url)
    assert before_ms <= out["time_ms"] <= after_ms
    [got] = out["queues"]
    ages = {p: got["lanes"][p].pop("oldest_waiting_age_ms") for p in ("high", "normal", "low")}
    for priority, entry_id in first.items():
        born = entry_ms(entry_id) or 0
        assert before_ms - born <= ages[priority] <= after_ms - born
    assert got.pop("oldest_waiting_age_ms") == ages["high"]
    assert got == {
        "name": queue,
        "waiting": 6,
        "in_flight": 2,
        "delayed": 2,
        "dead": 1,
        "consumers": {"alive": 0, "dead": 1},
        "lag": 6,
        "lanes": {
            "high": {"length": 1, "waiting": 1, "in_flight": 0, "lag": 1},
            "normal": {"length": 5, "waiting": 3, "in_flight": 2, "lag": 3},
            "low": {"length": 2, "waiting": 2, "in_flight": 0, "lag": 2},
        },
        "last_minute": {
            "seconds": got["last_minute"]["seconds"],
            "items": 0,
            "batches": 0,
            "items_per_s": 0.0,
            "outcomes": {},
            "wait_ms": {"p50": None, "p99": None},
            "service_ms": {"p50": None, "p99": None},
        },
    }
    assert 50.0 <= got["last_minute"]["seconds"] <= 60.0
    assert out["workers"] == [
        {"name": doomed.name, "state": "dead", "host": None, "pid": None, "queues": [queue],
         "in_flight": 2, "batches": None, "items": None, "last_batch_age_ms": None,
         "busy_us": None},
    ]  # fmt: skip

    # The scheduler re-queues what the dead worker held and removes its consumer.
    scheduler_factory()

    def cleaned_up() -> QueueStatus | None:
        snap = snapshot(redis_client, namespace)
        found = queue_of(snap, queue)
        return found if not snap.workers and found.consumers_dead == 0 else None

    after = wait_until(cleaned_up, 30, "the dead worker's consumer removed")
    assert (after.waiting, after.in_flight, after.delayed, after.dead) == (8, 0, 2, 1)
    assert [lane.waiting for lane in after.lanes] == [1, 5, 2]


def test_statistics_slots_give_throughput_and_percentiles(
    redis_client: redis.Redis, namespace: str, queue: str
) -> None:
    keys = queue_keys(redis_client, namespace, queue)
    now = time.time()
    current = stats.slot_of(now)
    # Two workers' flushes in the current slot, one three slots ago, one out of the window.
    writes = {
        current: [
            {"items": 60, "batches": 6, "o:ok": 59, "o:error": 1, "w:10": 60, "s:30": 60},
            {"items": 30, "batches": 3, "o:ok": 30, "w:20": 30, "s:30": 30},
        ],
        current - 3: [{"items": 10, "batches": 1, "o:ok": 10, "w:40": 10, "s:50": 10}],
        current - stats.WINDOW_SLOTS: [{"items": 1000, "batches": 1, "w:90": 1000}],
    }
    pipe = redis_client.pipeline(transaction=False)
    for slot, flushes in writes.items():
        for fields in flushes:
            for name, n in fields.items():
                pipe.hincrby(keys.stats(slot), name, n)
        pipe.expire(keys.stats(slot), stats.TTL_S)
    pipe.execute()

    w = queue_of(collect(redis_client, KeySpace(namespace), now), queue).window
    assert (w.items, w.batches, w.outcomes) == (100, 10, {"error": 1, "ok": 99})
    covered = now - (current - stats.WINDOW_SLOTS + 1) * stats.SLOT_S
    assert w.seconds == pytest.approx(covered)
    assert w.items_per_s == pytest.approx(100 / covered)
    # 60 waits in bucket 10, 30 in 20, 10 in 40: the 50th is in 10, the 99th in 40.
    assert (w.wait_p50_ms, w.wait_p99_ms) == (stats.upper_ms(10), stats.upper_ms(40))
    assert (w.service_p50_ms, w.service_p99_ms) == (stats.upper_ms(30), stats.upper_ms(50))


def test_workers_write_statistics_status_reads(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, worker_factory: Factory
) -> None:
    wait_serving(worker_factory([queue]))
    with Producer(redis_client, namespace=namespace) as producer:
        assert producer.map(queue, list(range(40)), timeout=30) == list(range(40))

    def counted() -> QueueStatus | None:
        found = queue_of(snapshot(redis_client, namespace), queue)
        return found if found.window.items >= 40 else None

    # Workers flush their counts about once a second.
    q = wait_until(counted, 15, "the worker's statistics")
    assert q.window.items == 40
    assert q.window.outcomes == {"ok": 40}
    assert 1 <= q.window.batches <= 40
    assert q.window.items_per_s == pytest.approx(40 / q.window.seconds)
    for p50, p99 in ((q.window.wait_p50_ms, q.window.wait_p99_ms),
                     (q.window.service_p50_ms, q.window.service_p99_ms)):  # fmt: skip
        assert p50 is not None and p99 is not None and 0 < p50 <= p99 < 10_000
    got = status_json(redis_url, namespace)["queues"][0]["last_minute"]
    assert (got["items"], got["outcomes"]) == (40, {"ok": 40})


# -- workers -------------------------------------------------------------------------------


def test_workers_table_idle_busy_and_dead(
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    queue: str,
    other_queue: str,
    worker_factory: Factory,
) -> None:
    idle = wait_serving(worker_factory([other_queue]))
    sleeper = wait_serving(
        worker_factory([queue], SLEEP, "--handler-option", "seconds=5", "--heartbeat-ttl", "2")
    )

    def state(name: str, wanted: str) -> Callable[[], WorkerStatus | None]:
        def check() -> WorkerStatus | None:
            found = worker_of(snapshot(redis_client, namespace), name)
            return found if found is not None and found.state == wanted else None

        return check

    live = wait_until(state(sleeper.name, "idle"), 10, "the sleeper idle")
    assert (live.host, live.pid, live.queues) == (socket.gethostname(), sleeper.proc.pid, (queue,))
    assert (live.batches, live.items, live.in_flight, live.last_batch_age_ms) == (0, 0, 0, None)
    assert live.busy_us == 0

    redis_client.xadd(queue_keys(redis_client, namespace, queue).stream, request("slow"))
    wait_until(state(sleeper.name, "busy"), 10, "the sleeper busy")
    rows = status_rows(redis_url, namespace)
    assert rows[sleeper.name][1:6] == [
        "busy",
        socket.gethostname(),
        str(sleeper.proc.pid),
        queue,
        "1",
    ]
    assert rows[idle.name][1:6] == [
        "idle",
        socket.gethostname(),
        str(idle.proc.pid),
        other_queue,
        "0",
    ]

    sleeper.kill()  # mid-batch: the heartbeat lapses within its 2 s TTL
    dead = wait_until(state(sleeper.name, "dead"), 10, "the sleeper dead")
    assert (dead.host, dead.pid, dead.in_flight, dead.queues) == (None, None, 1, (queue,))
    rows = status_rows(redis_url, namespace)
    assert rows[sleeper.name][1:] == ["dead", "-", "-", queue, "1", "-", "-", "-"]
    assert rows[idle.name][1] == "idle"
    assert rows[queue][1:6] == ["0", "1", "0", "0", "0/1"]  # waiting, in flight, ..., alive/dead


# -- the command -------------------------------------------------------------------------------


def test_watch_redraws_in_a_terminal_and_ctrl_c_exits_0(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str
) -> None:
    queue_keys(redis_client, namespace, queue)
    env = subprocess_env() | {"TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    args = [sys.executable, "-m", "redbatch", "status", "--watch", "--interval", "0.2",
            "--redis-url", redis_url, "--namespace", namespace]  # fmt: skip
    term = PtyProcess(args, env)
    try:
        term.read_until(lambda text: text.count("redbatch status at") >= 2, 30, "two frames")
        assert queue in term.text
        assert "\x1b[" in term.text  # drawn with cursor control, in place
        term.proc.send_signal(signal.SIGINT)
        code = term.finish(15)
    finally:
        term.kill()
    assert code == 0, term.text
    assert "Traceback" not in term.text


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_watch_into_a_pipe_appends_frames(
    redis_client: redis.Redis, redis_url: str, namespace: str, queue: str, stop: signal.Signals
) -> None:
    queue_keys(redis_client, namespace, queue)
    args = [sys.executable, "-m", "redbatch", "status", "--watch", "--interval", "0.2",
            "--redis-url", redis_url, "--namespace", namespace]  # fmt: skip
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        rows = 0
        for line in proc.stdout:  # bounded by the test's timeout should frames never come
            rows += line.startswith(queue)
            if rows == 2:
                break
        proc.send_signal(stop)  # Ctrl-C or a service manager's SIGTERM: exit 0 either way
        rest, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rows == 2
    assert proc.returncode == 0, rest


def test_unreachable_redis_exits_3_with_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = redbatch("status", "--redis-url", url)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"redbatch: error: cannot use Redis at {url}: ")


def test_an_empty_namespace_says_so(redis_url: str, namespace: str) -> None:
    # The settings from the environment this time, as `submit` reads them.
    env = {"REDBATCH_REDIS_URL": redis_url, "REDBATCH_NAMESPACE": namespace}
    result = redbatch("status", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"no queues in namespace {namespace} on {address(redis_url)}: "
        "nothing has been submitted or served here yet"
    )
    out = status_json(redis_url, namespace)
    assert (out["queues"], out["workers"]) == ([], [])
