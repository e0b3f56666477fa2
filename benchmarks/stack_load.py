"""A load against a running redbatch stack: submit N requests, wait for every outcome, count.

    python benchmarks/stack_load.py [--requests 10000] [--timeout 60] [--rate 0]

Reads REDBATCH_REDIS_URL, REDBATCH_NAMESPACE and REDBATCH_QUEUES (the first queue is used)
like the stack's processes do, sends the integers 0..N-1 (the echo handler returns each
payload), and prints one JSON object of counts. It is the compose file's `producer` service
(profile `bench`) and the load of tests/integration/test_stack.py and tests/compose.

The rule every request must follow: its handle ends, at the latest ``timeout`` + a grace after
it was submitted, with exactly one of
  ok       its result, which must be its payload (a different value counts as ``wrong``);
  lost     ResultTimeout: accepted by Redis, then nothing came back. This is what a Redis
           crash can lose (AOF appendfsync everysec: writes of about the last second);
  errors   any other outcome the producer raised (expired, dead, ...), counted by type.
A submit() that raised was never accepted (``refused``); the producer was told at once.
No handle may wait past its bound (``late_s`` is the worst overshoot).
Exit 0 when nothing was wrong and nothing hung, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from redbatch import Producer
from redbatch.errors import (
    ConnectionFailed,
    QueueFull,
    RedbatchError,
    RedisRefused,
    ResultTimeout,
)

# A handle may end this long after its own deadline (the reply is on its way).
GRACE_S = 2.0
# Allowed overshoot of a wait past its bound (scheduling on a busy box), seconds.
HANG_SLACK_S = 1.0


@dataclass
class Counts:
    sent: int = 0  # accepted by submit()
    refused: int = 0  # submit() raised: never accepted
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    late_s: float = 0.0
    seconds: float = 0.0
    lost_ids: list[str] = field(default_factory=list)
    # monotonic submit times of the lost requests, for the caller's checks
    lost_at: list[float] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return self.ok + self.wrong + self.lost + sum(self.errors.values())

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        del out["lost_ids"], out["lost_at"]
        out["seconds"] = round(self.seconds, 2)
        out["late_s"] = round(self.late_s, 3)
        return out


def run_load(
    producer: Producer,
    queue: str,
    count: int,
    *,
    timeout: float,
    on_submitted: Callable[[int], None] | None = None,
    rate: float = 0.0,
) -> Counts:
    """Submit ``count`` requests (payload = index), then wait for each; see the module doc.
    ``on_submitted(n)`` is called after the n-th accepted submit (for chaos injection).
    ``rate`` > 0 paces the submits at that many per second (the load then lasts count/rate s,
    so an outside observer can act while it runs); 0 submits as fast as possible."""
    counts = Counts()
    errors: Counter[str] = Counter()
    start = time.monotonic()
    handles = []
    for i in range(count):
        if rate > 0:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        try:
            handle = producer.submit(queue, i, timeout=timeout)
        # Refused, told so at once: Redis down (ConnectionFailed), restarting (RedisRefused:
        # LOADING), full, or not admitted within the timeout (ResultTimeout; cancelled then).
        except (ConnectionFailed, RedisRefused, QueueFull, ResultTimeout):
            counts.refused += 1
            continue
        handles.append((i, handle, time.monotonic()))
        counts.sent += 1
        if on_submitted is not None:
            on_submitted(counts.sent)
    for payload, handle, submitted in handles:
        # A wait may not outlive its own timeout; the submit loop itself may already have
        # taken past a handle's bound (submits wait out a Redis restart within their timeout),
        # which is not a late answer: lateness is measured from when this wait began.
        waited_from = time.monotonic()
        allowed = max(0.0, submitted + timeout + GRACE_S - waited_from)
        bound = waited_from + allowed
        try:
            value = handle.result(timeout=allowed)
        except ResultTimeout:
            counts.lost += 1
            counts.lost_ids.append(handle.id)
            counts.lost_at.append(submitted)
        except RedbatchError as exc:
            errors[type(exc).__name__] += 1
        else:
            if value == payload:
                counts.ok += 1
            else:
                counts.wrong += 1
        counts.late_s = max(counts.late_s, time.monotonic() - bound)
    counts.errors = {k: v for k, v in errors.items() if v}
    counts.seconds = time.monotonic() - start
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--rate", type=float, default=0.0, help="submits per second; 0 = no pacing")
    args = parser.parse_args(argv)
    url = os.environ.get("REDBATCH_REDIS_URL") or "redis://localhost:6379/0"
    namespace = os.environ.get("REDBATCH_NAMESPACE") or "rb"
    queues = (os.environ.get("REDBATCH_QUEUES") or "echo").replace(",", " ").split()
    with Producer.from_url(url, namespace=namespace) as producer:
        producer.ping()
        counts = run_load(producer, queues[0], args.requests, timeout=args.timeout, rate=args.rate)
    print(json.dumps(counts.summary()), flush=True)
    hung = counts.late_s > HANG_SLACK_S
    return 1 if counts.wrong or hung or counts.ended != counts.sent else 0


if __name__ == "__main__":
    sys.exit(main())
