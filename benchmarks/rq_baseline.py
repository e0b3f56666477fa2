"""Baseline: RQ 3 with a `SimpleWorker` (no fork per job) running no-op jobs.

    python benchmarks/rq_baseline.py --redis-url redis://127.0.0.1:PORT/1 [--jobs 1000]

RQ keeps its own keys, so give it a database of its own (/1). This process is the producer;
it starts one worker process with RQ's own CLI (`rq worker -w rq.worker.SimpleWorker`, logging
at WARNING so the terminal costs RQ nothing). Throughput: --jobs no-op jobs enqueued with
`enqueue_many` (pipelined), then every result waited for and checked. Latency: --latency-jobs
jobs one at a time, each enqueued and its result awaited (RQ's blocking `latest_result`).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from benchlib import cpu_seconds, emit, latency_ms, make_payloads
from rq import Queue
from rq.job import Job
from rq_jobs import noop

HERE = Path(__file__).resolve().parent
ENQUEUE_CHUNK = 100
RESULT_WAIT_S = 30


def wait_result(job: Job, expected: bytes) -> None:
    result = job.latest_result(timeout=RESULT_WAIT_S)
    if result is None or result.return_value != expected:
        raise RuntimeError(f"RQ job {job.id} did not return its payload: {result!r}")


def throughput(queue: Queue, payloads: list[bytes]) -> float:
    """Seconds to enqueue every payload as a job and see every result."""
    began = time.perf_counter()
    jobs: list[Job] = []
    for start in range(0, len(payloads), ENQUEUE_CHUNK):
        chunk = payloads[start : start + ENQUEUE_CHUNK]
        jobs += queue.enqueue_many([Queue.prepare_data(noop, args=(p,)) for p in chunk])
    for job, payload in zip(jobs, payloads, strict=True):
        wait_result(job, payload)
    return time.perf_counter() - began


def sequential(queue: Queue, payloads: list[bytes]) -> list[float]:
    latencies = []
    for payload in payloads:
        began = time.perf_counter()
        wait_result(queue.enqueue(noop, payload), payload)
        latencies.append(time.perf_counter() - began)
    return latencies


def run(url: str, jobs: int, latency_jobs: int) -> dict[str, object]:
    name = f"rq{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    queue = Queue(name, connection=client)
    env = {
        **os.environ,
        # The worker imports rq_jobs by name: it must find this folder.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker", "-u", url,
         "--logging_level", "WARNING", "--disable-job-desc-logging", name],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    payloads = make_payloads(jobs + latency_jobs + 1)
    try:
        sequential(queue, payloads[-1:])  # warm-up: the worker is up and serving
        cpu_before, own_before = cpu_seconds(worker.pid), time.process_time()
        seconds = throughput(queue, payloads[:jobs])
        worker_cpu = cpu_seconds(worker.pid) - cpu_before
        producer_cpu = time.process_time() - own_before
        latencies = sequential(queue, payloads[jobs : jobs + latency_jobs])
    finally:
        worker.terminate()  # RQ's warm shutdown: it finishes the job in hand and exits
        worker.wait(RESULT_WAIT_S)
        client.close()
    return {
        "requests": jobs,
        "all_requests": jobs + latency_jobs + 1,
        "seconds": seconds,
        "throughput_rps": jobs / seconds,
        "worker_cpu_us_per_request": worker_cpu / jobs * 1e6,
        "producer_cpu_us_per_request": producer_cpu / jobs * 1e6,
        "latency_ms": latency_ms(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", required=True, help="a database RQ may have to itself")
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--latency-jobs", type=int, default=100)
    args = parser.parse_args()
    emit(run(args.redis_url, args.jobs, args.latency_jobs))


if __name__ == "__main__":
    main()
