"""``--check`` of ``redbatch worker`` and ``redbatch scheduler``: exit 0 when a live
heartbeat of this host's worker (serving one of the QUEUEs) or scheduler exists, else 1 with
the reason on one line. ``liveness_files`` says how it finds them."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from redbatch import liveness_files
from redbatch.config import SchedulerConfig, WorkerConfig
from redbatch.protocol.keys import KeySpace, logical_name
from redbatch.scheduler.probes import UNREACHABLE_PASSES
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import Client, check_reachable, connection_name

EXIT_OK, EXIT_NOT_LIVE = 0, 1


def check_worker(client: Client, keyspace: KeySpace, queues: Sequence[str]) -> str:
    """ "" when a worker of this host serving one of ``queues`` has a heartbeat in Redis."""
    wanted = set(queues)
    found = [
        e
        for e in liveness_files.read(liveness_files.WORKER, keyspace.namespace)
        if not wanted or wanted & {logical_name(q) for q in e.queues}
    ]
    if not found:
        return f"no worker of {' '.join(queues) or 'any queue'} runs on this host"
    for entry in found:
        for queue in entry.queues:
            if client.exists(keyspace.queue(queue).worker(entry.name)):
                return ""
    names = ", ".join(e.name for e in found)
    return f"worker {names} runs on this host but has no live heartbeat in Redis"


def check_scheduler(client: Client, namespace: str, interval_s: float) -> str:
    """ "" when a scheduler of this host ran a pass that reached Redis within its liveness
    bound, and Redis answers now."""
    bound = (UNREACHABLE_PASSES + 1) * interval_s
    entries = liveness_files.read(liveness_files.SCHEDULER, namespace)
    if not entries:
        return "no scheduler runs on this host"
    if not any(e.age_s <= bound for e in entries):
        youngest = min(e.age_s for e in entries)
        return f"the scheduler's last pass that reached Redis was {youngest:.0f} s ago"
    client.ping()
    return ""


def run_check(config: WorkerConfig | SchedulerConfig) -> int:
    """``--check`` with the command's own settings; prints the reason when not live."""
    client = connect_any(
        config.redis_url, cluster=config.cluster, client_name=connection_name("ops", "check")
    )
    try:
        check_reachable(config.redis_url, client)
        if isinstance(config, WorkerConfig):
            why = check_worker(client, KeySpace(config.namespace), config.queues)
        else:
            why = check_scheduler(client, config.namespace, config.interval_s)
    finally:
        client.close()
    if why:
        print(f"redbatch: not live: {why}", file=sys.stderr)
        return EXIT_NOT_LIVE
    return EXIT_OK
