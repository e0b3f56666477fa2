"""A primary of the cluster dies (SIGKILL) in the middle of 20,000 requests over a 3-shard
queue served by 3 worker processes and a scheduler; its replica takes over.

Every request the producer accepted must end with exactly one outcome, except those Redis
itself lost: writes the dead primary acknowledged but had not yet replicated (redbatch does
not call WAIT, so an admitted request can vanish with them). The test prints how many that
was, and checks that each such request left no trace on the new primary (not in its stream,
not pending, no result): lost by Redis, not stranded by redbatch.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from helpers.cluster import LocalCluster
from helpers.schedulers import start_scheduler, wait_running
from helpers.workers import WorkerProcess, start_worker, wait_serving, wait_until
from redbatch import Producer
from redbatch.errors import ConnectionFailed, RedbatchError, ResultTimeout
from redbatch.ops.queue import set_shards
from redbatch.producer.handle import Handle
from redbatch.protocol.keys import GROUP, PRIORITIES, KeySpace
from redbatch.transport.cluster import connect_any

pytestmark = pytest.mark.cluster
REQUESTS = 20_000
SHARDS = 3
KILL_AFTER = 6_000  # submitted requests before the primary is killed
OUTCOME_WAIT_S = 60.0


class Submitter(threading.Thread):
    """Submits REQUESTS one by one; a submit refused while the slot has no primary
    (ConnectionFailed: nothing was admitted) is tried again after a pause."""

    def __init__(self, producer: Producer, queue: str) -> None:
        super().__init__(daemon=True)
        self.producer, self.queue = producer, queue
        self.handles: list[Handle] = []
        self.refused = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(REQUESTS):
                while True:
                    try:
                        self.handles.append(self.producer.submit(self.queue, i))
                        break
                    except ConnectionFailed:
                        self.refused += 1
                        time.sleep(0.05)  # the failover takes seconds: no event to await
        except BaseException as exc:
            self.error = exc


def _traces(client: RedisCluster, keyspace: KeySpace, shard: str) -> set[str]:
    """Request ids still anywhere in a shard's lanes (waiting or pending)."""
    keys = keyspace.queue(shard)
    ids = set()
    for priority in PRIORITIES:
        for _, fields in client.xrange(keys.stream_for(priority)):
            ids.add(fields[b"id"].decode())
        assert client.xpending(keys.stream_for(priority), GROUP)["pending"] == 0
    return ids


@pytest.mark.timeout(300)
def test_primary_failover_mid_run_every_request_ends_once(
    redis_cluster: LocalCluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    url = redis_cluster.url
    keyspace = KeySpace(namespace)
    client = connect_any(url)
    assert isinstance(client, RedisCluster)
    set_shards(client, keyspace, queue, SHARDS)
    # The victim: the primary of a shard's slot that is not the seed node the URL names.
    seed = redis_cluster.nodes[0].port
    victim_shard, victim = next(
        (f"{queue}#{k}", node)
        for k in range(SHARDS)
        for node in redis_cluster.nodes
        if node.port == client.get_node_from_key(keyspace.shard(queue, k, SHARDS).stream).port
        and node.port != seed
    )
    replica = redis_cluster.replica_of(victim)
    procs: list[WorkerProcess] = [
        start_worker(url, namespace, [queue], log_dir=str(tmp_path)) for _ in range(3)
    ]
    procs.append(start_scheduler(url, namespace, log_dir=str(tmp_path)))
    try:
        for worker in procs[:3]:
            wait_serving(worker)
        wait_running(procs[3])
        with Producer.from_url(url, namespace=namespace) as producer:
            submitter = Submitter(producer, queue)
            started = time.monotonic()
            submitter.start()
            wait_until(lambda: len(submitter.handles) >= KILL_AFTER, 60, "submissions")
            victim.kill()
            killed = time.monotonic()
            wait_until(
                lambda: redis_cluster.role(replica) == "master", 30, "the replica's takeover"
            )
            took_over = time.monotonic() - killed
            submitter.join(120)
            assert not submitter.is_alive() and submitter.error is None, submitter.error
            outcomes, lost = _outcomes(submitter.handles)
            elapsed = time.monotonic() - started
        traces = _traces(client, keyspace, victim_shard)
        lost_elsewhere = [h for h in lost if h.queue != victim_shard]
        stranded = [h for h in lost if h.id in traces]
        print(
            f"\nfailover: {REQUESTS} requests over {SHARDS} shards in {elapsed:.1f} s; primary "
            f"of {victim_shard} killed after {KILL_AFTER} submissions, replica took over in "
            f"{took_over:.1f} s; {submitter.refused} submit attempts refused meanwhile and "
            f"retried; outcomes {dict(outcomes)}; lost with the dead primary's unreplicated "
            f"writes: {len(lost)} (WAIT not used)"
        )
        assert len(submitter.handles) == REQUESTS
        assert sum(outcomes.values()) + len(lost) == REQUESTS
        assert not lost_elsewhere, [_where(client, keyspace, h) for h in lost_elsewhere[:5]]
        assert not stranded, [h.id for h in stranded[:5]]
        assert outcomes["ok"] == REQUESTS - len(lost)
    finally:
        codes = {p.name: p.stop() for p in procs}
        client.close()
        victim.start()  # back as a replica of the new primary, for the tests after this one
        redis_cluster.wait_healthy()
    assert all(code == 0 for code in codes.values()), codes
    for proc in procs:
        assert "Traceback" not in proc.log(), proc.log()[-3000:]


def _where(client: RedisCluster, keyspace: KeySpace, handle: Handle) -> str:
    """Where a request without an outcome is (for the failure message)."""
    keys = keyspace.queue(handle.queue)
    pending = [
        row
        for p in PRIORITIES
        for row in client.xpending_range(keys.stream_for(p), GROUP, "-", "+", 100)
    ]
    waiting = [e for p in PRIORITIES for e in client.xrange(keys.stream_for(p))]
    result = client.hgetall(keys.result(handle.id))
    return f"{handle.queue}/{handle.id}: result {result}, pending {pending}, waiting {waiting}"


def _outcomes(handles: list[Handle]) -> tuple[Counter[str], list[Handle]]:
    """Each handle's single outcome ("ok" with the right value, or the error's type), and the
    handles that got none within OUTCOME_WAIT_S."""
    deadline = time.monotonic() + OUTCOME_WAIT_S
    outcomes: Counter[str] = Counter()
    lost: list[Handle] = []
    for i, handle in enumerate(handles):
        try:
            value = handle.result(max(0.01, deadline - time.monotonic()))
        except ResultTimeout:
            lost.append(handle)
            continue
        except RedbatchError as exc:
            outcomes[type(exc).__name__] += 1
            continue
        assert value == i
        outcomes["ok"] += 1
    return outcomes, lost
