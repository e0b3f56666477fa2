"""Connections cut under load: a read whose reply is lost must not strand its entries.

Redis runs an XREADGROUP, the connection dies before the reply arrives, redis-py sends the
read again and gets newer entries: what the first read delivered is pending to a live
worker that never saw it. The worker's pending audit (``worker.pending``) takes such entries
back within seconds; before it they waited for the hung-worker rule (batch_timeout +
hung_margin, 330 s by default).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import redis

from helpers.entries import now_ms, wait_results
from helpers.schedulers import start_scheduler, wait_running
from helpers.servers import suite_server
from helpers.workers import WorkerProcess, assert_drained, start_worker, wait_serving
from redbatch import Producer
from redbatch.embedded import EmbeddedRedis
from redbatch.errors import ConnectionFailed
from redbatch.protocol.fields import build_entry
from redbatch.protocol.keys import GROUP, KeySpace

REQUESTS = 10_000
KILL_EVERY_S = 0.02  # the fault's cadence, not a synchronisation
# After the cuts stop, every request must be answered within this long. Generous against a
# loaded CPU (10,000 echo requests take ~1 s on an idle one), far below the 330 s that the
# hung-worker rule (the only recovery before the audit) would take.
ANSWERED_WITHIN_S = 60.0


class Cutter:
    """Kills every normal client connection (workers', scheduler's, producer's) every 20 ms
    on a thread, with ``CLIENT KILL TYPE normal`` (which spares the caller's own)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._stop = threading.Event()
        self.kills = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Cutter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(KILL_EVERY_S):
            self.kills += int(self._client.execute_command("CLIENT", "KILL", "TYPE", "normal"))


def admit(producer: Producer, queue: str, count: int) -> list[str]:
    """Submit ``count`` requests in chunks; a chunk whose admission failed for good is sent
    again (a re-sent admission may add a request twice: write-once keeps its first outcome)."""
    ids: list[str] = []
    chunk = 250
    for start in range(0, count, chunk):
        payloads = list(range(start, min(count, start + chunk)))
        for _ in range(20):
            try:
                ids += [h.id for h in producer.submit_many(queue, payloads, timeout=600)]
                break
            except ConnectionFailed:
                continue
        else:
            raise AssertionError("admission failed 20 times in a row")
    return ids


def test_entries_delivered_on_a_cut_connection_are_answered_within_seconds(
    tmp_path: Path,
) -> None:
    namespace, queue = f"cut{uuid.uuid4().hex[:6]}", "cut"
    keys = KeySpace(namespace).queue(queue)
    with EmbeddedRedis(directory=tmp_path, command=suite_server().command) as server:
        procs: list[WorkerProcess] = [
            wait_serving(start_worker(server.url, namespace, [queue], log_dir=str(tmp_path)))
            for _ in range(2)
        ]
        procs.append(wait_running(start_scheduler(server.url, namespace, log_dir=str(tmp_path))))
        client = redis.Redis.from_url(server.url)
        try:
            with (
                Producer.from_url(server.url, namespace=namespace) as producer,
                Cutter(server.url) as cutter,
            ):
                ids = admit(producer, queue, REQUESTS)
            assert cutter.kills > 0
            cut_ended = time.monotonic()
            wait_results(client, keys, ids, timeout=ANSWERED_WITHIN_S)
            recovered_s = time.monotonic() - cut_ended
            print(f"{cutter.kills} connections cut; all answered {recovered_s:.2f} s after")
            # Nothing left behind, on any lane: no entry waits for the hung-worker rule.
            for stream in keys.streams:
                if client.exists(stream):
                    assert_drained(client, stream)
            info = client.xinfo_groups(keys.stream)
            assert [g["pending"] for g in info if g["name"] == GROUP.encode()] == [0]
        finally:
            client.close()
            for proc in procs:
                assert proc.stop() == 0, proc.log()


def test_a_read_whose_reply_never_arrived_is_taken_back_by_its_live_worker(
    tmp_path: Path,
) -> None:
    """The lost reply, made exactly: entries delivered to a live worker's consumer by a read
    the worker never saw. They are re-queued (same attempt: none of them ran) and answered
    within the audit interval, not after the hung-worker rule's 330 s."""
    namespace, queue = f"lost{uuid.uuid4().hex[:6]}", "lost"
    keys = KeySpace(namespace).queue(queue)
    with EmbeddedRedis(directory=tmp_path, command=suite_server().command) as server:
        worker = wait_serving(start_worker(server.url, namespace, [queue], log_dir=str(tmp_path)))
        client = redis.Redis.from_url(server.url)
        try:
            waits = []
            for round_ in range(3):
                ids = [f"lost{round_}x{i}" for i in range(32)]
                # One transaction: the worker's own (blocked) read cannot get them first.
                pipe = client.pipeline(transaction=True)
                for i, request_id in enumerate(ids):
                    pipe.xadd(keys.stream, build_entry(request_id, b"\x01", enq=now_ms() + i))
                pipe.xreadgroup(GROUP, worker.name, {keys.stream: ">"}, count=len(ids))
                delivered = pipe.execute()[-1]
                assert len(delivered[0][1]) == len(ids)
                began = time.monotonic()
                results = wait_results(client, keys, ids, timeout=ANSWERED_WITHIN_S)
                waits.append(time.monotonic() - began)
                assert {r[b"status"] for r in results.values()} == {b"ok"}
                assert {r[b"attempt"] for r in results.values()} == {b"1"}  # never ran
            print(f"lost deliveries answered after {', '.join(f'{w:.2f}' for w in waits)} s")
            assert_drained(client, keys.stream)
            assert "took back 32 entries" in worker.log()
        finally:
            client.close()
            assert worker.stop() == 0, worker.log()
