"""What ``redbatch status`` shows: the queues and workers of one Redis and namespace.

Data collection (``collect``, returns ``model`` dataclasses) is apart from rendering
(``render``, rich tables), so ``redbatch demo`` and scripts can use
``collect(client, keyspace, now)``, ``render(snapshot)`` and ``to_json(snapshot)`` from here.

``--json`` prints one object (schema 1; new fields may be added, none renamed or removed).
Ages and times are integer milliseconds, ``null`` when there is nothing to measure::

    schema        1
    redis         "host:port" (or "unix:///path") of the server, never a password
    namespace     key prefix, e.g. "rb"
    time_ms       when the snapshot was taken (unix ms, the status command's clock)
    summary       totals over every queue (also those not listed in "queues"):
      queues, shown          queues in <namespace>:queues; how many "queues" lists
      complete               shown == queues (always with --all; the CLI lists at most the
                             queues served by a live worker or marked in <namespace>:watch
                             plus the 20 holding most, once there are more than 20)
      length, delayed, dead  entries in every lane (waiting + in flight), delayed, dead
    queues        one object per queue shown (all of <namespace>:queues unless summarized),
                  by name:
      name                   queue name
      waiting                entries no worker has received yet, all lanes
      in_flight              entries delivered and not yet acked (pending in group "workers")
      delayed                retries waiting for their time (ZCARD <ns>:{Q}:delayed)
      dead                   dead-lettered entries (XLEN <ns>:{Q}:dead)
      consumers              {"alive": workers with a heartbeat for the queue,
                              "dead": group consumers without one}
      oldest_waiting_age_ms  age of the oldest waiting entry (by its stream id), or null
      lag                    XINFO GROUPS lag summed over lanes; null if any lane's is unknown
      lanes                  {"high"|"normal"|"low": {"length" (XLEN: waiting + in flight),
                              "waiting", "in_flight", "lag", "oldest_waiting_age_ms"}}
      last_minute            from the statistics slots <ns>:{Q}:stats:<slot>:
        seconds              time covered: the current, partly filled slot + 5 before (50-60 s)
        items, batches       finished in that time
        items_per_s          items / seconds
        outcomes             {"ok": n, "error": n, ...}
        wait_ms              {"p50", "p99"}: enqueue to batch start, or null without data
        service_ms           {"p50", "p99"}: the handler's time for the item's batch
    workers       one object per worker, by name:
      name, host, pid        host and pid from the heartbeat (null when it is gone)
      state                  "busy" (running a batch by its heartbeat, or holding entries) |
                             "idle" | "starting" | "draining" (from the heartbeat);
                             "dead": no heartbeat and holds entries (the scheduler re-queues
                             them); "gone": no heartbeat, holds nothing (it will be removed)
      queues                 queues it serves (a dead one: the queues whose group has it)
      in_flight              entries it holds, all queues and lanes
      batches, items         done since it started (heartbeat), null when dead
      last_batch_age_ms      since its last batch ended, null before the first one
      busy_us                microseconds its handler ran since it started (heartbeat; two
                             snapshots' difference over their time apart is its busy ratio),
                             null when dead or for a worker too old to report it
"""

from redbatch.ops.status.choose import SUMMARY_ROWS
from redbatch.ops.status.collect import collect
from redbatch.ops.status.model import Snapshot, to_json
from redbatch.ops.status.render import render

__all__ = ["SUMMARY_ROWS", "Snapshot", "collect", "render", "to_json"]
